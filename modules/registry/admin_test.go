package registry_test

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// The operator's actions, through the registry on both stores: each
// changes what the token may do and tells observers.
func TestOperatorActions(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		ctx := t.Context()
		reg := registry.New(teststore.Open(t, driver), registry.Config{}, nil)
		reg.Start()
		t.Cleanup(reg.Stop)
		var (
			mu     sync.Mutex
			events []registry.Event
		)
		reg.Observe(func(ev registry.Event) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		})
		last := func() registry.Event {
			mu.Lock()
			defer mu.Unlock()
			return events[len(events)-1]
		}
		sub, err := reg.Subscribe(ctx, registry.SubscribeRequest{Name: "abuser"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.SetDisabled(ctx, "abuser", true); err != nil {
			t.Fatal(err)
		}
		if ev := last(); !ev.Revoked || ev.Gateway == nil || !ev.Gateway.Disabled {
			t.Errorf("disable event = %+v, want Revoked with the disabled gateway", ev)
		}
		if _, err := reg.Authenticate(ctx, sub.Token); !errors.Is(err, registry.ErrDisabled) {
			t.Errorf("Authenticate(disabled) = %v, want ErrDisabled", err)
		}
		if _, err := reg.Ping(ctx, sub.Token, netip.MustParseAddr("192.0.2.1"), nil); !errors.Is(err, registry.ErrDisabled) {
			t.Errorf("Ping(disabled) = %v, want ErrDisabled", err)
		}
		if err := reg.Unsubscribe(ctx, sub.Token, ""); !errors.Is(err, registry.ErrDisabled) {
			t.Errorf("Unsubscribe(disabled) = %v, want ErrDisabled", err)
		}
		if _, err := reg.Subscribe(ctx, registry.SubscribeRequest{Name: "abuser"}); !errors.Is(err, registry.ErrNameTaken) {
			t.Errorf("Subscribe(disabled name) = %v, want ErrNameTaken", err)
		}
		if _, err := reg.SetDisabled(ctx, "abuser", false); err != nil {
			t.Fatal(err)
		}
		if ev := last(); ev.Revoked || !ev.RecordsChanged || ev.Gateway.Disabled {
			t.Errorf("enable event = %+v, want the gateway back with its records", ev)
		}
		if _, err := reg.Ping(ctx, sub.Token, netip.Addr{}, nil); err != nil {
			t.Errorf("Ping(enabled) = %v", err)
		}

		token, err := reg.RotateToken(ctx, "abuser")
		if err != nil {
			t.Fatal(err)
		}
		if ev := last(); !ev.Revoked {
			t.Errorf("rotate event = %+v, want Revoked", ev)
		}
		if _, err := reg.Authenticate(ctx, sub.Token); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("old token after rotation: %v, want ErrNotFound", err)
		}
		if g, err := reg.Authenticate(ctx, token); err != nil || g.Name != "abuser" {
			t.Errorf("new token: %v, %v", g, err)
		}
		if _, err := reg.RotateToken(ctx, "nobody"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("RotateToken(unknown) = %v, want ErrNotFound", err)
		}

		if err := reg.Reserve(ctx, "brand"); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Subscribe(ctx, registry.SubscribeRequest{Name: "brand"}); !errors.Is(err, registry.ErrReservedName) {
			t.Errorf("Subscribe(reserved) = %v, want ErrReservedName", err)
		}
		for _, bad := range []string{"Bad Name", "", "-x"} {
			if err := reg.Reserve(ctx, bad); !errors.Is(err, registry.ErrInvalidName) {
				t.Errorf("Reserve(%q) = %v, want ErrInvalidName", bad, err)
			}
		}
		if err := reg.Release(ctx, "api"); !errors.Is(err, registry.ErrInvalidInput) {
			t.Errorf("Release(api) = %v, want ErrInvalidInput", err)
		}
		if names, err := reg.ReservedNames(ctx); err != nil || !slices.Equal(names, []string{"brand"}) {
			t.Errorf("ReservedNames = %v, %v", names, err)
		}
		if err := reg.Release(ctx, "brand"); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Subscribe(ctx, registry.SubscribeRequest{Name: "brand"}); err != nil {
			t.Errorf("Subscribe(released) = %v", err)
		}

		st, err := reg.Stats(ctx)
		if err != nil || st.Registered != 2 || st.ByMode[registry.ModeTunnel] != 2 {
			t.Errorf("Stats = %+v, %v", st, err)
		}
		if err := reg.Delete(ctx, "abuser"); err != nil {
			t.Fatal(err)
		}
		if ev := last(); !ev.Revoked || ev.Gateway != nil {
			t.Errorf("delete event = %+v", ev)
		}
		if err := reg.Delete(ctx, "abuser"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Delete twice = %v, want ErrNotFound", err)
		}
	})
}
