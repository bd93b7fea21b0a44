package storetest

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

func adminOf(t *testing.T, s registry.Store) registry.BackupStore {
	t.Helper()
	a, ok := s.(registry.BackupStore)
	if !ok {
		t.Fatalf("%T does not implement registry.BackupStore", s)
	}
	return a
}

func names(gs []*registry.Gateway) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.Name
	}
	return out
}

func testAdminList(t *testing.T, s registry.Store) {
	a := adminOf(t, s)
	ctx := t.Context()
	for i, n := range []string{"alpha", "bravo", "charlie", "delta", "echo"} {
		g := newGateway(n)
		if i%2 == 1 {
			g.Mode = registry.ModeDynamic
		}
		email := ""
		if n == "charlie" {
			email = "Owner@Example.org"
		}
		g.PublicV4 = netip.MustParseAddr("198.51.100." + string(rune('1'+i)))
		if n == "echo" {
			g.LocalAddrs = []netip.Addr{netip.MustParseAddr("192.168.1.20"), netip.MustParseAddr("fd00::2")}
			g.Expired = true
		}
		create(t, s, g, email)
	}
	list := func(q registry.ListQuery) []string {
		t.Helper()
		gs, err := a.ListGateways(ctx, q)
		if err != nil {
			t.Fatalf("ListGateways(%+v): %v", q, err)
		}
		return names(gs)
	}
	// Pages by keyset: every name exactly once, in order.
	var all []string
	for after := ""; ; {
		page := list(registry.ListQuery{After: after, Limit: 2})
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("page of %d with limit 2", len(page))
		}
		all = append(all, page...)
		after = page[len(page)-1]
	}
	if want := []string{"alpha", "bravo", "charlie", "delta", "echo"}; !slices.Equal(all, want) {
		t.Errorf("paged listing = %v, want %v", all, want)
	}
	for _, tc := range []struct {
		q    registry.ListQuery
		want []string
	}{
		{registry.ListQuery{Name: "ha"}, []string{"alpha", "charlie"}},
		{registry.ListQuery{Email: "owner@example"}, []string{"charlie"}},
		{registry.ListQuery{Addr: netip.MustParseAddr("198.51.100.2")}, []string{"bravo"}},
		{registry.ListQuery{Addr: netip.MustParseAddr("192.168.1.20")}, []string{"echo"}},
		{registry.ListQuery{Addr: netip.MustParseAddr("192.168.1.2")}, nil},
		{registry.ListQuery{Mode: registry.ModeDynamic}, []string{"bravo", "delta"}},
		{registry.ListQuery{Expired: ptr(true)}, []string{"echo"}},
		{registry.ListQuery{Disabled: ptr(true)}, nil},
	} {
		if got := list(tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("ListGateways(%+v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	gs, err := a.ListGateways(ctx, registry.ListQuery{Name: "charlie"})
	if err != nil || len(gs) != 1 || gs[0].Email != "Owner@Example.org" {
		t.Errorf("listed charlie = %v, %v; want its account joined", gs, err)
	}
	for _, q := range []registry.ListQuery{{Limit: -1}, {Limit: registry.MaxListLimit + 1}, {Mode: "bogus"}, {Name: "a\x00b"}} {
		if _, err := a.ListGateways(ctx, q); !errors.Is(err, registry.ErrInvalidInput) {
			t.Errorf("ListGateways(%+v) error = %v, want ErrInvalidInput", q, err)
		}
	}
}

func testAdminStats(t *testing.T, s registry.Store) {
	a := adminOf(t, s)
	for i, n := range []string{"a1", "a2", "a3", "a4"} {
		g := newGateway(n)
		if i == 0 {
			g.Mode = registry.ModeDynamic
		}
		g.Expired = i == 1
		g.Disabled = i >= 2
		create(t, s, g, "")
	}
	st, err := a.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Registered != 4 || st.Expired != 1 || st.Disabled != 2 ||
		st.ByMode[registry.ModeDynamic] != 1 || st.ByMode[registry.ModeTunnel] != 3 {
		t.Errorf("Stats = %+v", st)
	}
}

func testAdminDisabled(t *testing.T, s registry.Store) {
	create(t, s, newGateway("gw"), "")
	g, err := s.UpdateGateway(t.Context(), "gw", func(g *registry.Gateway) (*string, error) {
		g.Disabled = true
		return nil, nil
	})
	if err != nil || !g.Disabled {
		t.Fatalf("UpdateGateway(disable) = %+v, %v", g, err)
	}
	if !get(t, s, "gw").Disabled {
		t.Error("Disabled not stored")
	}
	// A ping reports the flag, so the registry can refuse it.
	res := s.PingBatch(t.Context(), []registry.PingRequest{{TokenHash: hash("token-gw"), At: base}})
	if res[0].Err != nil || !res[0].Gateway.Disabled {
		t.Errorf("PingBatch on a disabled gateway = %+v", res[0])
	}
}

func testAdminReserved(t *testing.T, s registry.Store) {
	a := adminOf(t, s)
	ctx := t.Context()
	for _, n := range []string{"kept", "abuse", "kept"} {
		if err := a.ReserveName(ctx, n); err != nil {
			t.Fatalf("ReserveName(%s): %v", n, err)
		}
	}
	got, err := a.ReservedNames(ctx)
	if err != nil || !slices.Equal(got, []string{"abuse", "kept"}) {
		t.Errorf("ReservedNames = %v, %v", got, err)
	}
	err = s.CreateGateway(ctx, newGateway("kept"), "")
	wantErr(t, "CreateGateway(reserved)", err, registry.ErrReservedName)
	if err := a.ReleaseName(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "ReleaseName twice", a.ReleaseName(ctx, "kept"), registry.ErrNotFound)
	create(t, s, newGateway("kept"), "")
}

func testImport(t *testing.T, s registry.Store) {
	a := adminOf(t, s)
	ctx := t.Context()
	if c, err := a.Counts(ctx); err != nil || !c.Zero() {
		t.Fatalf("Counts() on a new store = %+v, %v", c, err)
	}
	g1 := newGateway("one")
	g1.Email, g1.EmailVerified, g1.Disabled = "o@example.org", true, true
	g1.LocalAddrs = []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	g1.LastPing = base
	g2 := newGateway("two")
	batch := registry.ImportBatch{
		Accounts: []registry.Account{{Email: "o@example.org", OptOut: true, Created: base}},
		Gateways: []*registry.Gateway{g1, g2},
		Records: []registry.Record{
			rec("_acme-challenge", "TXT", "v1", base),
			{Subtree: registry.ZoneSubtree(), Owner: "_acme-challenge", Type: "TXT", Value: "z", TTL: time.Minute, Created: base},
		},
		Reserved: []string{"held"},
	}
	batch.Records[0].Subtree = registry.GatewaySubtree("one")
	for round, want := range []registry.Counts{{Accounts: 1, Gateways: 2, Records: 2, Reserved: 1}, {}} {
		got, err := a.Import(ctx, batch)
		if err != nil || got != want {
			t.Fatalf("Import round %d = %+v, %v; want %+v", round, got, err, want)
		}
	}
	stored := get(t, s, "one")
	want := *g1
	want.AccountID, want.OptOut = stored.AccountID, true
	checkGateway(t, "imported one", stored, &want)
	wantRecords(t, s, "one", "_acme-challenge/TXT/v1")
	if c, err := a.Counts(ctx); err != nil || c != (registry.Counts{Accounts: 1, Gateways: 2, Records: 2, Reserved: 1}) {
		t.Errorf("Counts() after an import = %+v, %v", c, err)
	}
	// A record of an unknown gateway, or an account missing, fails the
	// whole batch and writes nothing of it.
	bad := registry.ImportBatch{
		Gateways: []*registry.Gateway{newGateway("three")},
		Records:  []registry.Record{{Subtree: registry.GatewaySubtree("ghost"), Owner: "x", Type: "TXT", Value: "v", TTL: time.Minute, Created: base}},
	}
	if _, err := a.Import(ctx, bad); err == nil {
		t.Error("Import with a record of an unknown gateway succeeded")
	}
	orphan := newGateway("four")
	orphan.Email = "nobody@example.org"
	if _, err := a.Import(ctx, registry.ImportBatch{Gateways: []*registry.Gateway{orphan}}); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Import with a missing account: %v, want ErrNotFound", err)
	}
	for _, n := range []string{"three", "four"} {
		if _, err := s.Gateway(ctx, n); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s after a failed batch: %v, want ErrNotFound", n, err)
		}
	}
}
