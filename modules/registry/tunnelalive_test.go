package registry_test

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

// TunnelAlive records a ping by name from the tunnel's address, and never
// brings an expired gateway back.
func TestTunnelAlive(t *testing.T) {
	ctx := t.Context()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg := registry.New(store, registry.Config{ExpireAfter: time.Hour}, nil)
	reg.Start()
	t.Cleanup(reg.Stop)
	if _, err := reg.Subscribe(ctx, registry.SubscribeRequest{Name: "home"}); err != nil {
		t.Fatal(err)
	}
	g, err := reg.TunnelAlive(ctx, "home", netip.MustParseAddr("::ffff:198.51.100.7"))
	if err != nil || g.PublicV4 != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("TunnelAlive: %+v, %v", g, err)
	}
	if _, err := reg.TunnelAlive(ctx, "nobody", netip.Addr{}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("unknown gateway: %v", err)
	}
	// Expire it by hand, as the sweeper would.
	if _, err := store.ExpireSilent(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.TunnelAlive(ctx, "home", netip.MustParseAddr("198.51.100.8")); !errors.Is(err, registry.ErrExpired) {
		t.Fatalf("expired gateway: %v", err)
	}
	if g, err := reg.Gateway(ctx, "home"); err != nil || !g.Expired {
		t.Fatalf("brought back: %+v, %v", g, err)
	}
}
