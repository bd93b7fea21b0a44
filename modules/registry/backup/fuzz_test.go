package backup_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/backup"
)

// FuzzImport feeds arbitrary streams to Import: it must refuse them with
// an error or accept them with a trailer that matches the rows, never
// panic. One store serves every input (Force), as opening one per input
// would leave the fuzzer a few inputs a second.
func FuzzImport(f *testing.F) {
	dst := teststore.Open(f, "sqlite").(registry.BackupStore)
	f.Add([]byte(`{"type":"header","format":"gatehouse-registry","version":1,"counts":{}}` + "\n" +
		`{"type":"trailer","counts":{"accounts":0,"gateways":0,"records":0,"reserved":0},"checksum":"0000000000000000000000000000000000000000000000000000000000000000"}` + "\n"))
	f.Add([]byte(`{"type":"header","format":"gatehouse-registry","version":1}` + "\n" +
		`{"type":"gateway","name":"gw1","mode":"tunnel","created":"2026-01-01T00:00:00Z","token_hash":"AAAA"}` + "\n"))
	f.Add([]byte(`{"type":"header","format":"gatehouse-registry","version":1}` + "\n" + `{"type":"record","gateway":"x","rtype":"TXT","ttl":-1}` + "\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		tr, _, err := backup.Import(t.Context(), dst, bytes.NewReader(stream), backup.ImportOptions{BatchSize: 3, Force: true})
		if errors.Is(err, backup.ErrNotEmpty) {
			t.Fatalf("Force still refused: %v", err)
		}
		if err == nil && tr.Type != "trailer" {
			t.Fatalf("accepted a stream without a trailer: %+v", tr)
		}
	})
}
