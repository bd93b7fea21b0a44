package registry_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// flakyGateways is a real store whose Gateway fails while fail is set, as
// a database does for a moment (a restart, a lost connection).
type flakyGateways struct {
	registry.Store
	fail atomic.Bool
}

var errFlaky = errors.New("the database went away for a moment")

func (s *flakyGateways) Gateway(ctx context.Context, name string) (*registry.Gateway, error) {
	if s.fail.Load() {
		return nil, errFlaky
	}
	return s.Store.Gateway(ctx, name)
}

// TestDomainsLoadKeepsIndexOnStoreError: a load (at start and after each
// recheck) that cannot read a gateway fails and leaves the index as it
// was, instead of taking that gateway's domains off the air until the next
// load an hour later.
func TestDomainsLoadKeepsIndexOnStoreError(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		ctx := t.Context()
		store := &flakyGateways{Store: teststore.Open(t, driver)}
		reg := registry.New(store, registry.Config{}, nil)
		d := registry.NewDomains(reg, registry.DomainsConfig{Zone: "box.test",
			Check: func(context.Context, string, string) error { return nil }})
		sub, err := reg.Subscribe(ctx, registry.SubscribeRequest{Name: "myhome"})
		if err != nil {
			t.Fatal(err)
		}
		g, err := reg.Authenticate(ctx, sub.Token)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Claim(ctx, g, "home.example.com"); err != nil {
			t.Fatal(err)
		}
		if err := d.Load(ctx); err != nil {
			t.Fatal(err)
		}
		store.fail.Store(true)
		if err := d.Load(ctx); !errors.Is(err, errFlaky) {
			t.Fatalf("Load with the store failing: %v", err)
		}
		if name, ok := d.Gateway("home.example.com"); !ok || name != "myhome" {
			t.Fatalf("after a failed load the domain routes to %q, %v", name, ok)
		}
		store.fail.Store(false)
		if err := reg.Delete(ctx, "myhome"); err != nil {
			t.Fatal(err)
		}
		if err := d.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Gateway("home.example.com"); ok {
			t.Fatal("a deleted gateway's domain is still routed")
		}
	})
}

// TestRecheckOldestFirst: a recheck round asks about the least recently
// checked claims first, so a round cut short by its deadline does not
// leave the same claims unchecked round after round.
func TestRecheckOldestFirst(t *testing.T) {
	ctx := t.Context()
	store := teststore.Open(t, "sqlite")
	reg := registry.New(store, registry.Config{}, nil)
	var asked []string
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := registry.NewDomains(reg, registry.DomainsConfig{Zone: "box.test",
		Check: func(_ context.Context, domain, _ string) error {
			asked = append(asked, domain)
			cancel() // the round's deadline passes after one check
			return nil
		}})
	if _, err := reg.Subscribe(ctx, registry.SubscribeRequest{Name: "myhome"}); err != nil {
		t.Fatal(err)
	}
	// a.example.com sorts first but was checked last.
	for i, dom := range []string{"a.example.com", "b.example.com", "c.example.com"} {
		at := time.Unix(int64(3-i)*1000, 0).UTC()
		if err := store.ClaimDomain(ctx, registry.DomainClaim{Domain: dom, Gateway: "myhome", Created: at, Checked: at}); err != nil {
			t.Fatal(err)
		}
	}
	_ = d.Recheck(rctx)
	if len(asked) != 1 || asked[0] != "c.example.com" {
		t.Fatalf("a cut-short round asked about %v, want the least recently checked, c.example.com", asked)
	}
}
