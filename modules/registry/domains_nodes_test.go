package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cnamedns"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/domaincheck"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/pgstore"
)

// Two nodes sharing one PostgreSQL registry: a domain claimed or released
// on one is routed, or no longer, by the other, which follows the store's
// change announcements as a node does (Reload per changed subtree).
func TestDomainsFollowOtherNodes(t *testing.T) {
	dsn, schema := teststore.Postgres(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dns := cnamedns.Start(t)
	checker, err := domaincheck.New([]string{dns.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	node := func() (*registry.Registry, *registry.Domains) {
		s, err := pgstore.Open(ctx, dsn, pgstore.WithSchema(schema))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		reg := registry.New(s, registry.Config{}, nil)
		d := registry.NewDomains(reg, registry.DomainsConfig{Zone: "box.test", Check: checker.Check})
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Stop)
		ch, err := reg.Changes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for st := range ch {
				_ = reg.Reload(ctx, st)
			}
		}()
		return reg, d
	}
	regA, domA := node()
	_, domB := node()

	sub, err := regA.Subscribe(ctx, registry.SubscribeRequest{Name: "myhome"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := regA.Authenticate(ctx, sub.Token)
	if err != nil {
		t.Fatal(err)
	}
	dns.Set("home.example.com", "myhome.box.test")
	dns.Set("_acme-challenge.home.example.com", "_acme-challenge.myhome.box.test")
	if _, err := domA.Claim(ctx, g, "home.example.com"); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "the other node to route the claimed domain", func() bool {
		name, ok := domB.Gateway("home.example.com")
		return ok && name == "myhome"
	})
	if err := domA.Release(ctx, g, "home.example.com"); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "the other node to drop the released domain", func() bool {
		_, ok := domB.Gateway("home.example.com")
		return !ok
	})
}
