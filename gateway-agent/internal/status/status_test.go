package status

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSaveLoadText(t *testing.T) {
	st := Status{Version: "v1", Updated: time.Now().UTC().Truncate(time.Second), Name: "home", FQDN: "home.box.test", Mode: "tunnel",
		Tunnel:      Tunnel{Enabled: true, LastError: "dial: connection refused", Failures: 3},
		Certificate: Certificate{Ready: true, NotAfter: time.Now().Add(time.Hour), Issuer: "R11"},
		Problems:    []string{"the tunnel is down: dial: connection refused"}}
	path := filepath.Join(t.TempDir(), FileName)
	if err := st.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil || got.FQDN != "home.box.test" || !got.Updated.Equal(st.Updated) {
		t.Fatalf("loaded %+v %v", got, err)
	}
	text := got.Text()
	for _, want := range []string{"home.box.test", "down: dial: connection refused", "valid until", "problem:", "last ping:    never"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}
