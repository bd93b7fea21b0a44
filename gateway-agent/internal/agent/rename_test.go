package agent

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

type noMail struct{}

func (noMail) SendVerification(context.Context, string, string, string) error { return nil }
func (noMail) SendReclamation(context.Context, string, string, string) error  { return nil }

// startRegAPI serves the real registration API (registry on SQLite) over
// HTTPS on loopback, and returns its URL and a PEM file of its root.
func startRegAPI(t *testing.T) (string, string) {
	t.Helper()
	reg := registry.New(teststore.Open(t, "sqlite"), registry.Config{SweepInterval: time.Hour}, noMail{})
	reg.Start()
	t.Cleanup(reg.Stop)
	srv := httptest.NewTLSServer(regapi.New(reg, regapi.Config{Zone: "box.test"}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "cloud-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, ca
}

// testAgent is an agent of that cloud that is not Run: the test drives
// its steps. Its ACME directory is a closed loopback port.
func testAgent(t *testing.T, cloud, ca string, grace time.Duration) *Agent {
	t.Helper()
	cfg := config.Default()
	cfg.Cloud, cfg.CloudCA, cfg.StateDir = cloud, ca, t.TempDir()
	cfg.ACMECA = "https://127.0.0.1:1/directory"
	cfg.SetupListen, cfg.HTTPSListen, cfg.APIListen, cfg.MDNS = "", "", "", false
	cfg.RenameGrace = config.Duration(grace)
	a, err := New(cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.runCtx = ctx
	t.Cleanup(func() {
		cancel()
		_ = a.proxy.Shutdown(context.Background())
		a.certs.Stop()
		a.api.HTTPClient.CloseIdleConnections()
	})
	return a
}

func subscribe(t *testing.T, a *Agent, name string) *state.Registration {
	t.Helper()
	sub, err := a.api.Subscribe(context.Background(), cloudapi.SubscribeRequest{Name: name})
	if err != nil {
		t.Fatalf("subscribing %s: %v", name, err)
	}
	return a.registration(sub)
}

// A rename keeps the old name reserved to this gateway for the grace
// period: nobody else can take it, the owner can switch back to it, and it
// is given up only once the period is over. The reservation survives a
// restart (it is in the state file).
func TestRenameKeepsTheOldNameForTheGracePeriod(t *testing.T) {
	cloud, ca := startRegAPI(t)
	const grace = time.Hour
	a := testAgent(t, cloud, ca, grace)
	other := testAgent(t, cloud, ca, grace) // another gateway, after the name
	ctx := context.Background()

	a.st.Current = subscribe(t, a, "oldname")
	a.switchTo(ctx, subscribe(t, a, "newname"))
	a.retire(ctx)
	if _, err := other.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: "oldname"}); !errors.Is(err, cloudapi.ErrNameUnavailable) {
		t.Fatalf("another gateway subscribing the renamed-away name during the grace period: %v", err)
	}
	st := a.Status()
	if len(st.Reserved) != 1 || st.Reserved[0].Name != "oldname" || st.Reserved[0].Until.Before(time.Now().Add(grace-time.Minute)) {
		t.Fatalf("status reserved: %+v", st.Reserved)
	}
	saved, err := a.store.Load()
	if err != nil || len(saved.Retired) != 1 || saved.Retired[0].RetireAfter.IsZero() || saved.Retired[0].Token == "" {
		t.Fatalf("state file: %v %+v", err, saved.Retired)
	}

	// The owner switches back within the period: no subscribe, the same
	// token, and the name it left is held in turn.
	oldToken := saved.Retired[0].Token
	if err := a.ChooseName(ctx, "oldname"); err != nil {
		t.Fatalf("switching back: %v", err)
	}
	if p := a.st.Pending; !p.Valid() || p.Name != "oldname" || p.Token != oldToken || len(a.st.Retired) != 0 {
		t.Fatalf("after switching back: pending %+v retired %+v", p, a.st.Retired)
	}
	a.switchTo(ctx, a.st.Pending.Clone())
	a.retire(ctx)
	if _, err := other.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: "newname"}); !errors.Is(err, cloudapi.ErrNameUnavailable) {
		t.Fatalf("newname during its grace period: %v", err)
	}

	// Once the period is over the name is given up, and free.
	a.now = func() time.Time { return time.Now().Add(grace + time.Second) }
	a.retire(ctx)
	if len(a.st.Retired) != 0 {
		t.Fatalf("still retired after the grace period: %+v", a.st.Retired)
	}
	if _, err := other.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: "newname"}); err != nil {
		t.Fatalf("newname after the grace period: %v", err)
	}
}

// With no grace period (rename_grace 0), and for states written before it
// existed (no retire_after), the old name is given up at once, as before.
func TestRenameWithoutGraceGivesUpAtOnce(t *testing.T) {
	cloud, ca := startRegAPI(t)
	a := testAgent(t, cloud, ca, 0)
	other := testAgent(t, cloud, ca, 0)
	ctx := context.Background()
	a.st.Current = subscribe(t, a, "oldname")
	legacy := subscribe(t, a, "legacy")
	a.st.Retired = []state.Registration{*legacy}
	a.switchTo(ctx, subscribe(t, a, "newname"))
	a.retire(ctx)
	for _, name := range []string{"oldname", "legacy"} {
		if _, err := other.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: name}); err != nil {
			t.Errorf("%s not given up: %v", name, err)
		}
	}
}
