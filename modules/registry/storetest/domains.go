package storetest

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// testAllowFrom: acme-dns's allowfrom is kept as given (host bits too) by
// create, read by every lookup, and cleared by an update.
func testAllowFrom(t *testing.T, s registry.Store) {
	ctx := t.Context()
	g := newGateway("acct")
	g.AllowFrom = []netip.Prefix{netip.MustParsePrefix("192.0.2.7/24"), netip.MustParsePrefix("2001:db8::/32")}
	create(t, s, g, "")
	checkGateway(t, "Gateway(acct)", get(t, s, "acct"), g)
	byToken, err := s.GatewayByToken(ctx, g.TokenHash)
	if err != nil {
		t.Fatal(err)
	}
	checkGateway(t, "GatewayByToken", byToken, g)
	res := s.PingBatch(ctx, []registry.PingRequest{{TokenHash: g.TokenHash, At: base}})
	if res[0].Err != nil || !slices.Equal(res[0].Gateway.AllowFrom, g.AllowFrom) {
		t.Errorf("PingBatch returned %+v", res[0])
	}
	if _, err := s.UpdateGateway(ctx, "acct", func(g *registry.Gateway) (*string, error) {
		g.AllowFrom = nil
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "acct").AllowFrom; got != nil {
		t.Errorf("AllowFrom after clearing = %v", got)
	}
}

func claim(domain, gateway string, at time.Time) registry.DomainClaim {
	return registry.DomainClaim{Domain: domain, Gateway: gateway, Created: at, Checked: at}
}

func wantClaims(t *testing.T, s registry.Store, gateway string, want ...string) []registry.DomainClaim {
	t.Helper()
	got, err := s.DomainClaims(t.Context(), gateway)
	if err != nil {
		t.Fatalf("DomainClaims(%q): %v", gateway, err)
	}
	var names []string
	for _, c := range got {
		names = append(names, c.Gateway+":"+c.Domain)
		if c.Created.Location() != time.UTC || c.Checked.Location() != time.UTC {
			t.Errorf("claim %s: times not UTC", c.Domain)
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("DomainClaims(%q) = %v, want %v", gateway, names, want)
	}
	return got
}

func testDomainClaims(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("one"), "")
	create(t, s, newGateway("two"), "")
	for _, c := range []registry.DomainClaim{claim("home.example.com", "one", base), claim("b.example.net", "one", base), claim("c.example.org", "two", base)} {
		if err := s.ClaimDomain(ctx, c); err != nil {
			t.Fatalf("ClaimDomain(%s): %v", c.Domain, err)
		}
	}
	wantErr(t, "a domain another gateway holds", s.ClaimDomain(ctx, claim("home.example.com", "two", base)), registry.ErrDomainTaken)
	wantErr(t, "an unknown gateway", s.ClaimDomain(ctx, claim("x.example.com", "ghost", base)), registry.ErrNotFound)
	// A claim again by its holder refreshes its check time only.
	later := base.Add(time.Hour)
	if err := s.ClaimDomain(ctx, claim("home.example.com", "one", later)); err != nil {
		t.Fatalf("ClaimDomain again: %v", err)
	}
	got := wantClaims(t, s, "one", "one:b.example.net", "one:home.example.com")
	if !got[1].Created.Equal(base) || !got[1].Checked.Equal(later) {
		t.Errorf("refreshed claim = %+v, want created %v, checked %v", got[1], base, later)
	}
	wantClaims(t, s, "", "one:b.example.net", "two:c.example.org", "one:home.example.com")

	wantErr(t, "release of another's domain", s.ReleaseDomain(ctx, "two", "home.example.com"), registry.ErrNotFound)
	if err := s.ReleaseDomain(ctx, "one", "home.example.com"); err != nil {
		t.Fatalf("ReleaseDomain: %v", err)
	}
	wantErr(t, "release twice", s.ReleaseDomain(ctx, "one", "home.example.com"), registry.ErrNotFound)
	// Released, the domain is free for another gateway.
	if err := s.ClaimDomain(ctx, claim("home.example.com", "two", base)); err != nil {
		t.Fatalf("ClaimDomain after release: %v", err)
	}
	if err := s.ReleaseDomain(ctx, "two", ""); err != nil {
		t.Fatalf("ReleaseDomain(two, all): %v", err)
	}
	if err := s.ReleaseDomain(ctx, "two", ""); err != nil {
		t.Errorf("ReleaseDomain(two, all) with none left: %v", err)
	}
	wantClaims(t, s, "", "one:b.example.net")
}

func testDomainClaimsCascade(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("gone"), "")
	if err := s.ClaimDomain(ctx, claim("home.example.com", "gone", base)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteGateway(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	wantClaims(t, s, "")
	// The same name registered again holds nothing of the old owner's.
	create(t, s, newGateway("gone"), "")
	wantClaims(t, s, "gone")
}

// testConcurrentDomainClaims: of gateways claiming one domain at once,
// exactly one holds it.
func testConcurrentDomainClaims(t *testing.T, s registry.Store) {
	const n = 8
	for i := range n {
		create(t, s, newGateway(fmt.Sprintf("g%d", i)), "")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = s.ClaimDomain(t.Context(), claim("race.example.com", fmt.Sprintf("g%d", i), base)) })
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, registry.ErrDomainTaken):
			t.Errorf("claimer %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d claimers won, want 1", won)
	}
	if got, err := s.DomainClaims(t.Context(), ""); err != nil || len(got) != 1 {
		t.Errorf("DomainClaims = %v, %v", got, err)
	}
}

func testImportDomains(t *testing.T, s registry.Store) {
	a := adminOf(t, s)
	ctx := t.Context()
	batch := registry.ImportBatch{
		Gateways: []*registry.Gateway{newGateway("one")},
		Domains:  []registry.DomainClaim{claim("home.example.com", "one", base)},
	}
	for round, want := range []registry.Counts{{Gateways: 1, Domains: 1}, {}} {
		got, err := a.Import(ctx, batch)
		if err != nil || got != want {
			t.Fatalf("Import round %d = %+v, %v; want %+v", round, got, err, want)
		}
	}
	if c, err := a.Counts(ctx); err != nil || c != (registry.Counts{Gateways: 1, Domains: 1}) {
		t.Errorf("Counts() = %+v, %v", c, err)
	}
	got := wantClaims(t, s, "", "one:home.example.com")
	if !got[0].Created.Equal(base) || !got[0].Checked.Equal(base) {
		t.Errorf("imported claim = %+v", got[0])
	}
	_, err := a.Import(ctx, registry.ImportBatch{Domains: []registry.DomainClaim{claim("x.example.com", "ghost", base)}})
	if err == nil {
		t.Error("a claim of an unknown gateway was imported")
	}
}

// UpgradedFromV6 checks a store opened on a schema as version 6 left it,
// holding the gateway "old" (each store's migration test writes it): the
// gateway has no allowfrom (any address), can claim a custom domain, and
// its claims go with it (the version 8 cascade).
func UpgradedFromV6(t *testing.T, s registry.Store) {
	t.Helper()
	ctx := t.Context()
	g, err := s.Gateway(ctx, "old")
	if err != nil || g.AllowFrom != nil {
		t.Fatalf("Gateway(old) after upgrade = %+v, %v", g, err)
	}
	at := time.Unix(5, 0).UTC()
	if err := s.ClaimDomain(ctx, registry.DomainClaim{Domain: "home.example.com", Gateway: "old", Created: at, Checked: at}); err != nil {
		t.Fatalf("ClaimDomain after upgrade: %v", err)
	}
	if err := s.DeleteGateway(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if claims, err := s.DomainClaims(ctx, ""); err != nil || len(claims) != 0 {
		t.Errorf("claims after the gateway's deletion = %v, %v (the v8 cascade)", claims, err)
	}
}
