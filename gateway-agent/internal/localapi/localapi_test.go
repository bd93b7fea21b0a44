package localapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type noTunnel struct{}

func (noTunnel) Open(context.Context, tunnel.Initiator) (*tunnel.Stream, error) {
	return nil, client.ErrNotConnected
}

func start(t *testing.T) (*Client, *forward.Manager) {
	t.Helper()
	key, err := LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := forward.NewManager(noTunnel{}, forward.Settings{})
	srv := httptest.NewServer(New(key, m, nil))
	t.Cleanup(func() { srv.Close(); m.Close() })
	return &Client{Base: srv.URL, Key: key}, m
}

func apiErr(t *testing.T, err error) *APIError {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want an API error, got %v", err)
	}
	return ae
}

func TestAuthorization(t *testing.T) {
	c, _ := start(t)
	ctx := context.Background()
	for _, key := range []string{"", "wrong", c.Key + "x", strings.ToUpper(c.Key)} {
		bad := &Client{Base: c.Base, Key: key}
		if ae := apiErr(t, func() error { _, err := bad.List(ctx); return err }()); ae.Status != 401 || ae.Name != "unauthorized" {
			t.Errorf("key %q: %+v", key, ae)
		}
	}
	// Another scheme, or the key as a query parameter, is not enough.
	for _, h := range []string{"Basic " + c.Key, c.Key, "Bearer"} {
		req, _ := http.NewRequest("GET", c.Base+"/v1/forwards?key="+c.Key, nil)
		req.Header.Set("Authorization", h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: %d", h, resp.StatusCode)
		}
	}
	if _, err := c.List(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestForwardsAPI(t *testing.T) {
	c, _ := start(t)
	ctx := context.Background()
	info, err := c.Add(ctx, forward.Spec{Local: "127.0.0.1:0", Gateway: "GW1", IP: "192.168.10.12", Remote: 22})
	if err != nil {
		t.Fatal(err)
	}
	if info.Gateway != "gw1" || info.Origin != "api" || strings.HasSuffix(info.Local, ":0") {
		t.Fatalf("added %+v", info)
	}
	l, err := c.List(ctx)
	if err != nil || len(l) != 1 || l[0].Local != info.Local || l[0].IP != "192.168.10.12" || l[0].Remote != 22 {
		t.Fatalf("list %+v %v", l, err)
	}
	for _, tc := range []struct {
		spec forward.Spec
		code int
		name string
	}{
		{forward.Spec{Local: info.Local, Gateway: "gw1", IP: "192.168.10.12", Remote: 23}, 409, "local_in_use"},
		{forward.Spec{Local: "127.0.0.1:0", Gateway: "gw1", IP: "not-an-ip", Remote: 22}, 400, "invalid_forward"},
		{forward.Spec{Local: "127.0.0.1:0", Gateway: "", IP: "10.0.0.1", Remote: 22}, 400, "invalid_forward"},
		{forward.Spec{Local: "127.0.0.1:0", Gateway: "gw1", IP: "10.0.0.1"}, 400, "invalid_forward"},
	} {
		_, err := c.Add(ctx, tc.spec)
		if ae := apiErr(t, err); ae.Status != tc.code || ae.Name != tc.name || ae.Message == "" {
			t.Errorf("%+v: %+v", tc.spec, ae)
		}
	}
	// A body that is not the JSON object.
	req, _ := http.NewRequest("POST", c.Base+"/v1/forwards", strings.NewReader(`{"local":"1","port":2}`))
	req.Header.Set("Authorization", "Bearer "+c.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("unknown field: %d", resp.StatusCode)
	}
	if ae := apiErr(t, func() error { _, err := c.Remove(ctx, "127.0.0.1:1"); return err }()); ae.Status != 404 || ae.Name != "not_found" {
		t.Fatalf("remove unknown: %+v", ae)
	}
	got, err := c.Remove(ctx, info.Local)
	if err != nil || got.Local != info.Local {
		t.Fatalf("remove: %+v %v", got, err)
	}
	if l, _ := c.List(ctx); len(l) != 0 {
		t.Fatalf("after remove: %+v", l)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	if len(k1) != 64 {
		t.Fatalf("key %q", k1)
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil || k2 != k1 {
		t.Fatalf("the key changed across starts: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKey(dir); err == nil || !strings.Contains(err.Error(), "readable by other users") {
		t.Fatalf("a world-readable key was used: %v", err)
	}
	if _, err := ReadKey(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
}

func TestCheckListen(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8091": true, "[::1]:8091": true, "localhost:8091": true, "127.0.0.2:1": true,
		":8091": false, "0.0.0.0:8091": false, "192.168.1.1:8091": false, "[::]:8091": false, "8091": false,
	} {
		if err := CheckListen(addr); (err == nil) != ok {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

// GET /v1/status answers the agent's status, tunnels and their nodes
// included; without a status function it is not found, and like every
// call it needs the key.
func TestStatus(t *testing.T) {
	key, err := LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := forward.NewManager(noTunnel{}, forward.Settings{})
	defer m.Close()
	want := status.Status{Name: "myhome", Tunnel: status.Tunnel{Enabled: true, Connected: true, Connections: []status.TunnelConnection{
		{Node: "node-a", Addr: "127.0.0.1", Connected: true},
		{Node: "node-b", Addr: "127.0.0.2", LastError: "dial: refused", Failures: 2},
	}}}
	srv := httptest.NewServer(New(key, m, nil).WithStatus(func() status.Status { return want }))
	defer srv.Close()
	ctx := context.Background()
	got, err := (&Client{Base: srv.URL, Key: key}).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "myhome" || !slices.Equal(got.Tunnel.Connections, want.Tunnel.Connections) {
		t.Fatalf("got %+v", got)
	}
	if ae := apiErr(t, func() error { _, err := (&Client{Base: srv.URL, Key: "wrong"}).Status(ctx); return err }()); ae.Status != 401 {
		t.Fatalf("without the key: %+v", ae)
	}
	c, _ := start(t)
	if ae := apiErr(t, func() error { _, err := c.Status(ctx); return err }()); ae.Status != 404 || ae.Name != "not_found" {
		t.Fatalf("no status function: %+v", ae)
	}
}
