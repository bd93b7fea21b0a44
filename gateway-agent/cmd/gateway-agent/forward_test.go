package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/localapi"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

type noTunnel struct{}

func (noTunnel) Open(context.Context, tunnel.Initiator) (*tunnel.Stream, error) {
	return nil, client.ErrNotConnected
}

// The forward command drives a running agent's API (here the API handler
// itself over loopback, with the key in a state directory).
func TestForwardCommand(t *testing.T) {
	dir := t.TempDir()
	key, err := localapi.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := forward.NewManager(noTunnel{}, forward.Settings{})
	srv := httptest.NewServer(localapi.New(key, m, nil))
	defer func() { srv.Close(); m.Close() }()
	flags := []string{"-state-dir", dir, "-api-listen", strings.TrimPrefix(srv.URL, "http://")}
	fwd := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		sub, rest := args[0], args[1:]
		code := run(append(append([]string{"forward", sub}, flags...), rest...), nil, &out, &errb)
		return code, out.String(), errb.String()
	}

	if code, out, _ := fwd("list"); code != 0 || !strings.Contains(out, "no forwardings") {
		t.Fatalf("empty list: %d %s", code, out)
	}
	code, out, errs := fwd("add", "-json", "127.0.0.1:0", "gw1", "192.168.10.12", "22")
	var info forward.Info
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Gateway != "gw1" {
		t.Fatalf("add: %d %s %s", code, out, errs)
	}
	if code, out, _ := fwd("list"); code != 0 || !strings.Contains(out, info.Local) || !strings.Contains(out, "192.168.10.12:22") || !strings.Contains(out, "api") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, _, errs := fwd("add", info.Local, "gw1", "192.168.10.12", "22"); code != 1 || !strings.Contains(errs, "refused:") || !strings.Contains(errs, "local_in_use") {
		t.Fatalf("add twice: %d %s", code, errs)
	}
	if code, _, errs := fwd("add", "2022", "gw1", "192.168.10.12"); code != 2 || !strings.Contains(errs, "want 4 arguments") {
		t.Fatalf("missing argument: %d %s", code, errs)
	}
	if code, out, errs := fwd("rm", info.Local); code != 0 || !strings.Contains(out, "closed "+info.Local) {
		t.Fatalf("rm: %d %s %s", code, out, errs)
	}
	if code, _, errs := fwd("rm", info.Local); code != 1 || !strings.Contains(errs, "not_found") {
		t.Fatalf("rm again: %d %s", code, errs)
	}
	// Without the key file the command says where the key should be.
	var out2, errb bytes.Buffer
	if code := run([]string{"forward", "list", "-state-dir", t.TempDir(), "-api-listen", strings.TrimPrefix(srv.URL, "http://")}, nil, &out2, &errb); code != 1 || !strings.Contains(errb.String(), "api.key") {
		t.Fatalf("no key: %d %s", code, errb.String())
	}
}
