// Package storetest is the conformance suite for registry.Store: every
// store package calls Run from its tests, so that the SQLite and
// PostgreSQL stores (and any future one) keep exactly the same semantics.
//
// It is test support only; nothing in a production build imports it.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Run runs the suite. open must return a fresh, empty store for each call
// and close it when the test ends (t.Cleanup). Times in the suite have
// microsecond precision, the finest PostgreSQL keeps.
func Run(t *testing.T, open func(t *testing.T) registry.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s registry.Store)
	}{
		{"CreateAndGet", testCreateAndGet},
		{"CreateWithEmail", testCreateWithEmail},
		{"CreateNameTaken", testCreateNameTaken},
		{"NotFound", testNotFound},
		{"TokenLookups", testTokenLookups},
		{"UpdateWritesEveryField", testUpdateWritesEveryField},
		{"UpdateRollsBackOnError", testUpdateRollsBack},
		{"UpdateLinksAccountByEmail", testUpdateLinksAccount},
		{"SetAccountOptOut", testSetAccountOptOut},
		{"DeleteGatewayCascades", testDeleteGatewayCascades},
		{"PingBatch", testPingBatch},
		{"ExpireSilentThenPingRestores", testExpireThenPing},
		{"GatewaysByPublicIP", testGatewaysByPublicIP},
		{"ForEachGateway", testForEachGateway},
		{"CountGateways", testCountGateways},
		{"RecordsOldestFirst", testRecordsOrder},
		{"AppendRecordsDedupes", testAppendDedupes},
		{"AppendRecordsTooMany", testAppendTooMany},
		{"SetRecordsReplacesNamedRRsets", testSetRecords},
		{"DeleteRecordsFilters", testDeleteRecords},
		{"PruneRecords", testPruneRecords},
		{"DeleteRecordsMatchesTTL", testDeleteRecordsTTL},
		{"ZoneRecords", testZoneRecords},
		{"RecordCheckSeesTheWholeSubtree", testRecordCheck},
		{"RecordCheckUnderConcurrentWriters", testRecordCheckConcurrent},
		{"ConcurrentCreateSameName", testConcurrentCreate},
		{"CancelledContextWritesNothing", testCancelledContext},
		{"SealedTokens", testSealedTokens},
		{"AdminListPagesAndFilters", testAdminList},
		{"AdminStats", testAdminStats},
		{"AdminDisabledRoundTrips", testAdminDisabled},
		{"AdminReservedNames", testAdminReserved},
		{"ImportIsIdempotent", testImport},
		{"AllowFromRoundTrips", testAllowFrom},
		{"DomainClaims", testDomainClaims},
		{"DomainClaimsGoWithTheGateway", testDomainClaimsCascade},
		{"ConcurrentDomainClaims", testConcurrentDomainClaims},
		{"ImportDomains", testImportDomains},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// base is the suite's "now": fixed, so expectations are exact, and with
// microsecond precision.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

var errBoom = errors.New("boom")

func hash(s string) []byte { return registry.HashToken(s) }

func ptr[T any](v T) *T { return &v }

// newGateway returns a minimal gateway whose token is "token-" + name.
func newGateway(name string) *registry.Gateway {
	return &registry.Gateway{
		Name:      name,
		TokenHash: hash("token-" + name),
		Mode:      registry.ModeTunnel,
		Created:   base.Add(-time.Hour),
	}
}

func create(t *testing.T, s registry.Store, g *registry.Gateway, email string) *registry.Gateway {
	t.Helper()
	if err := s.CreateGateway(t.Context(), g, email); err != nil {
		t.Fatalf("CreateGateway(%s): %v", g.Name, err)
	}
	return g
}

func get(t *testing.T, s registry.Store, name string) *registry.Gateway {
	t.Helper()
	g, err := s.Gateway(t.Context(), name)
	if err != nil {
		t.Fatalf("Gateway(%s): %v", name, err)
	}
	return g
}

// diffGateway lists the fields where got differs from want, and stored
// times that are not UTC.
func diffGateway(got, want *registry.Gateway) []string {
	if got == nil || want == nil {
		if got != want {
			return []string{fmt.Sprintf("got %v, want %v", got, want)}
		}
		return nil
	}
	var d []string
	check := func(field string, equal bool, g, w any) {
		if !equal {
			d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w))
		}
	}
	checkTime := func(field string, g, w time.Time) {
		check(field, g.Equal(w), g, w)
		if !g.IsZero() && g.Location() != time.UTC {
			d = append(d, fmt.Sprintf("%s: %v is not UTC", field, g))
		}
	}
	check("Name", got.Name == want.Name, got.Name, want.Name)
	check("TokenHash", bytes.Equal(got.TokenHash, want.TokenHash), got.TokenHash, want.TokenHash)
	check("Mode", got.Mode == want.Mode, got.Mode, want.Mode)
	check("Description", got.Description == want.Description, got.Description, want.Description)
	check("AccountID", got.AccountID == want.AccountID, got.AccountID, want.AccountID)
	check("Email", got.Email == want.Email, got.Email, want.Email)
	check("OptOut", got.OptOut == want.OptOut, got.OptOut, want.OptOut)
	check("Disabled", got.Disabled == want.Disabled, got.Disabled, want.Disabled)
	check("EmailVerified", got.EmailVerified == want.EmailVerified, got.EmailVerified, want.EmailVerified)
	check("VerifyTokenHash", bytes.Equal(got.VerifyTokenHash, want.VerifyTokenHash), got.VerifyTokenHash, want.VerifyTokenHash)
	checkTime("VerifyExpires", got.VerifyExpires, want.VerifyExpires)
	check("ReclaimTokenHash", bytes.Equal(got.ReclaimTokenHash, want.ReclaimTokenHash), got.ReclaimTokenHash, want.ReclaimTokenHash)
	checkTime("ReclaimExpires", got.ReclaimExpires, want.ReclaimExpires)
	checkTime("LastPing", got.LastPing, want.LastPing)
	check("PublicV4", got.PublicV4 == want.PublicV4, got.PublicV4, want.PublicV4)
	check("PublicV6", got.PublicV6 == want.PublicV6, got.PublicV6, want.PublicV6)
	check("LocalAddrs", slices.Equal(got.LocalAddrs, want.LocalAddrs), got.LocalAddrs, want.LocalAddrs)
	check("Expired", got.Expired == want.Expired, got.Expired, want.Expired)
	check("AllowFrom", slices.Equal(got.AllowFrom, want.AllowFrom), got.AllowFrom, want.AllowFrom)
	checkTime("Created", got.Created, want.Created)
	return d
}

func checkGateway(t *testing.T, what string, got, want *registry.Gateway) {
	t.Helper()
	for _, d := range diffGateway(got, want) {
		t.Errorf("%s: %s", what, d)
	}
}

// rec is a record of the test gateway; Created orders it.
func rec(owner, rtype, value string, created time.Time) registry.Record {
	return registry.Record{Owner: owner, Type: rtype, Value: value, TTL: 60 * time.Second, Created: created}
}

// recKeys renders records for comparison: owner/type/value in order.
func recKeys(recs []registry.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Owner + "/" + r.Type + "/" + r.Value
	}
	return out
}

func records(t *testing.T, s registry.Store, gateway string) []registry.Record {
	t.Helper()
	recs, err := s.Records(t.Context(), gw(gateway))
	if err != nil {
		t.Fatalf("Records(%s): %v", gateway, err)
	}
	return recs
}

func wantRecords(t *testing.T, s registry.Store, gateway string, want ...string) {
	t.Helper()
	if got := recKeys(records(t, s, gateway)); !slices.Equal(got, want) {
		t.Errorf("Records(%s) = %q, want %q", gateway, got, want)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v, want %v", what, err, want)
	}
}

func testCreateAndGet(t *testing.T, s registry.Store) {
	full := &registry.Gateway{
		Name:             "full",
		TokenHash:        hash("t-full"),
		Mode:             registry.ModeDynamic,
		Description:      "living-room box ✓",
		EmailVerified:    true,
		VerifyTokenHash:  hash("v-full"),
		VerifyExpires:    base.Add(24 * time.Hour),
		ReclaimTokenHash: hash("r-full"),
		ReclaimExpires:   base.Add(2 * time.Hour),
		LastPing:         base.Add(-time.Minute),
		PublicV4:         netip.MustParseAddr("198.51.100.1"),
		PublicV6:         netip.MustParseAddr("2001:db8::1"),
		LocalAddrs: []netip.Addr{netip.MustParseAddr("192.168.1.10"),
			netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("fd00::10")},
		Created: base.Add(-48 * time.Hour),
	}
	want := *full
	create(t, s, full, "")
	checkGateway(t, "caller's gateway after create", full, &want)
	checkGateway(t, "Gateway(full)", get(t, s, "full"), &want)

	// A gateway stored expired, with nothing optional set, keeps its
	// zero values (no empty hashes turned into something else).
	bare := &registry.Gateway{Name: "bare", TokenHash: hash("t-bare"), Mode: registry.ModeTunnel,
		Expired: true, Created: base}
	wantBare := *bare
	create(t, s, bare, "")
	checkGateway(t, "Gateway(bare)", get(t, s, "bare"), &wantBare)

	// A zero Created is filled in by the store.
	before := time.Now().Add(-time.Second)
	fresh := &registry.Gateway{Name: "fresh", TokenHash: hash("t-fresh"), Mode: registry.ModeTunnel}
	create(t, s, fresh, "")
	if fresh.Created.Before(before) || fresh.Created.After(time.Now().Add(time.Second)) {
		t.Errorf("zero Created set to %v, want about now", fresh.Created)
	}
	checkGateway(t, "Gateway(fresh)", get(t, s, "fresh"), fresh)
}

func testCreateWithEmail(t *testing.T, s registry.Store) {
	a := create(t, s, newGateway("a"), "owner@example.org")
	if a.AccountID == 0 || a.Email != "owner@example.org" || a.OptOut {
		t.Fatalf("after create with email: AccountID=%d Email=%q OptOut=%v", a.AccountID, a.Email, a.OptOut)
	}
	checkGateway(t, "Gateway(a)", get(t, s, "a"), a)
	b := create(t, s, newGateway("b"), "owner@example.org")
	if b.AccountID != a.AccountID {
		t.Errorf("same email gave account %d, then %d", a.AccountID, b.AccountID)
	}
	c := create(t, s, newGateway("c"), "other@example.org")
	if c.AccountID == a.AccountID || c.AccountID == 0 {
		t.Errorf("other email gave account %d (first was %d)", c.AccountID, a.AccountID)
	}
	if g := get(t, s, "c"); g.Email != "other@example.org" || g.AccountID != c.AccountID {
		t.Errorf("Gateway(c) account = %d %q", g.AccountID, g.Email)
	}
}

func testCreateNameTaken(t *testing.T, s registry.Store) {
	orig := create(t, s, newGateway("taken"), "")
	dup := newGateway("taken")
	dup.TokenHash = hash("another token")
	dup.Description = "intruder"
	err := s.CreateGateway(t.Context(), dup, "intruder@example.org")
	wantErr(t, "second CreateGateway(taken)", err, registry.ErrNameTaken)
	if dup.AccountID != 0 || dup.Email != "" {
		t.Errorf("failed create changed the caller's gateway: AccountID=%d Email=%q", dup.AccountID, dup.Email)
	}
	checkGateway(t, "Gateway(taken)", get(t, s, "taken"), orig)
	if _, err := s.GatewayByToken(t.Context(), dup.TokenHash); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("the refused gateway's token finds %v", err)
	}
}

func testNotFound(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("present"), "")
	_, err := s.Gateway(ctx, "absent")
	wantErr(t, "Gateway", err, registry.ErrNotFound)
	for _, h := range [][]byte{hash("unknown"), nil, {}} {
		_, err = s.GatewayByToken(ctx, h)
		wantErr(t, fmt.Sprintf("GatewayByToken(%x)", h), err, registry.ErrNotFound)
		_, err = s.GatewayByReclaimToken(ctx, h)
		wantErr(t, fmt.Sprintf("GatewayByReclaimToken(%x)", h), err, registry.ErrNotFound)
		_, err = s.GatewayByVerifyToken(ctx, h)
		wantErr(t, fmt.Sprintf("GatewayByVerifyToken(%x)", h), err, registry.ErrNotFound)
	}
	called := false
	g, err := s.UpdateGateway(ctx, "absent", func(*registry.Gateway) (*string, error) {
		called = true
		return nil, nil
	})
	wantErr(t, "UpdateGateway", err, registry.ErrNotFound)
	if called || g != nil {
		t.Errorf("UpdateGateway of an absent name: fn called %v, returned %v", called, g)
	}
	wantErr(t, "DeleteGateway", s.DeleteGateway(ctx, "absent"), registry.ErrNotFound)
	wantErr(t, "SetAccountOptOut", s.SetAccountOptOut(ctx, 987654, true), registry.ErrNotFound)
	_, err = s.Records(ctx, gw("absent"))
	wantErr(t, "Records", err, registry.ErrNotFound)
	wantErr(t, "AppendRecords", s.AppendRecords(ctx, gw("absent"), []registry.Record{rec("", "TXT", "x", base)}, registry.AtMost(10)), registry.ErrNotFound)
	wantErr(t, "SetRecords", s.SetRecords(ctx, gw("absent"), []registry.Record{rec("", "TXT", "x", base)}, registry.AtMost(10)), registry.ErrNotFound)
	_, err = s.DeleteRecords(ctx, gw("absent"), []registry.RecordFilter{{}})
	wantErr(t, "DeleteRecords", err, registry.ErrNotFound)
}

func testTokenLookups(t *testing.T, s registry.Store) {
	ctx := t.Context()
	a := newGateway("a")
	a.ReclaimTokenHash, a.ReclaimExpires = hash("reclaim-a"), base.Add(time.Hour)
	a.VerifyTokenHash, a.VerifyExpires = hash("verify-a"), base.Add(time.Hour)
	create(t, s, a, "a@example.org")
	// b and c have no reclaim or verify token: two "empty" hashes must
	// not collide in the store's unique indexes.
	create(t, s, newGateway("b"), "")
	create(t, s, newGateway("c"), "")

	for _, name := range []string{"a", "b", "c"} {
		g, err := s.GatewayByToken(ctx, hash("token-"+name))
		if err != nil || g.Name != name {
			t.Errorf("GatewayByToken(token-%s) = %v, %v", name, g, err)
		}
	}
	g, err := s.GatewayByToken(ctx, hash("token-a"))
	if err == nil {
		checkGateway(t, "GatewayByToken(a)", g, a)
	}
	g, err = s.GatewayByReclaimToken(ctx, hash("reclaim-a"))
	if err != nil || g.Name != "a" || g.Email != "a@example.org" {
		t.Errorf("GatewayByReclaimToken = %v, %v", g, err)
	}
	g, err = s.GatewayByVerifyToken(ctx, hash("verify-a"))
	if err != nil || g.Name != "a" || g.Email != "a@example.org" {
		t.Errorf("GatewayByVerifyToken = %v, %v", g, err)
	}
	// Each lookup searches its own column only.
	_, err = s.GatewayByReclaimToken(ctx, hash("token-a"))
	wantErr(t, "GatewayByReclaimToken(main token)", err, registry.ErrNotFound)
	_, err = s.GatewayByVerifyToken(ctx, hash("reclaim-a"))
	wantErr(t, "GatewayByVerifyToken(reclaim token)", err, registry.ErrNotFound)
	_, err = s.GatewayByToken(ctx, hash("verify-a"))
	wantErr(t, "GatewayByToken(verify token)", err, registry.ErrNotFound)
}

func testUpdateWritesEveryField(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("u"), "")
	var want registry.Gateway
	got, err := s.UpdateGateway(ctx, "u", func(g *registry.Gateway) (*string, error) {
		g.TokenHash = hash("new token")
		g.Mode = registry.ModeDynamic
		g.Description = "updated"
		g.EmailVerified = true
		g.VerifyTokenHash, g.VerifyExpires = hash("new verify"), base.Add(3*time.Hour)
		g.ReclaimTokenHash, g.ReclaimExpires = hash("new reclaim"), base.Add(4*time.Hour)
		g.LastPing = base.Add(-5 * time.Second)
		g.PublicV4 = netip.MustParseAddr("203.0.113.5")
		g.PublicV6 = netip.MustParseAddr("2001:db8:5::5")
		g.LocalAddrs = []netip.Addr{netip.MustParseAddr("10.0.0.5")}
		g.Expired = true
		g.AllowFrom = []netip.Prefix{netip.MustParsePrefix("192.0.2.7/24"), netip.MustParsePrefix("2001:db8::/32")}
		g.Created = base.Add(-72 * time.Hour)
		want = *g
		return nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateGateway: %v", err)
	}
	checkGateway(t, "returned gateway", got, &want)
	checkGateway(t, "Gateway(u)", get(t, s, "u"), &want)
	_, err = s.GatewayByToken(ctx, hash("token-u"))
	wantErr(t, "old token", err, registry.ErrNotFound)
	if g, err := s.GatewayByReclaimToken(ctx, hash("new reclaim")); err != nil || g.Name != "u" {
		t.Errorf("new reclaim token: %v, %v", g, err)
	}

	// Clearing fields writes the zero values back.
	got, err = s.UpdateGateway(ctx, "u", func(g *registry.Gateway) (*string, error) {
		g.VerifyTokenHash, g.VerifyExpires = nil, time.Time{}
		g.ReclaimTokenHash, g.ReclaimExpires = nil, time.Time{}
		g.PublicV4, g.PublicV6, g.LocalAddrs = netip.Addr{}, netip.Addr{}, nil
		g.Expired = false
		want = *g
		return nil, nil
	})
	if err != nil {
		t.Fatalf("UpdateGateway (clear): %v", err)
	}
	checkGateway(t, "Gateway(u) cleared", get(t, s, "u"), &want)
	checkGateway(t, "returned gateway (cleared)", got, &want)
}

func testUpdateRollsBack(t *testing.T, s registry.Store) {
	orig := create(t, s, newGateway("r"), "keep@example.org")
	got, err := s.UpdateGateway(t.Context(), "r", func(g *registry.Gateway) (*string, error) {
		g.Description = "must not be written"
		g.TokenHash = hash("must not be written")
		g.Expired = true
		return ptr("other@example.org"), errBoom
	})
	wantErr(t, "UpdateGateway with failing fn", err, errBoom)
	if got != nil {
		t.Errorf("UpdateGateway returned %v with its error", got)
	}
	checkGateway(t, "Gateway(r) after rollback", get(t, s, "r"), orig)
}

func testUpdateLinksAccount(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("a"), "")
	create(t, s, newGateway("b"), "")
	link := func(name string, email *string) *registry.Gateway {
		t.Helper()
		g, err := s.UpdateGateway(ctx, name, func(g *registry.Gateway) (*string, error) { return email, nil })
		if err != nil {
			t.Fatalf("UpdateGateway(%s, %v): %v", name, email, err)
		}
		checkGateway(t, "returned vs stored "+name, g, get(t, s, name))
		return g
	}
	a := link("a", ptr("new@example.org"))
	if a.AccountID == 0 || a.Email != "new@example.org" {
		t.Fatalf("linked a: AccountID=%d Email=%q", a.AccountID, a.Email)
	}
	b := link("b", ptr("new@example.org"))
	if b.AccountID != a.AccountID {
		t.Errorf("b linked to account %d, a to %d", b.AccountID, a.AccountID)
	}
	c := create(t, s, newGateway("c"), "new@example.org")
	if c.AccountID != a.AccountID {
		t.Errorf("create with a linked email gave account %d, want %d", c.AccountID, a.AccountID)
	}
	// A nil email keeps the link.
	if g := link("b", nil); g.AccountID != a.AccountID || g.Email != "new@example.org" {
		t.Errorf("nil email changed b's account to %d %q", g.AccountID, g.Email)
	}
	// "" unlinks a, and only a.
	if g := link("a", ptr("")); g.AccountID != 0 || g.Email != "" {
		t.Errorf("unlinked a: AccountID=%d Email=%q", g.AccountID, g.Email)
	}
	if g := get(t, s, "b"); g.AccountID != a.AccountID {
		t.Errorf("unlinking a unlinked b (account %d)", g.AccountID)
	}
	// Re-linking to another address moves the gateway.
	if g := link("b", ptr("moved@example.org")); g.AccountID == a.AccountID || g.AccountID == 0 || g.Email != "moved@example.org" {
		t.Errorf("moved b: AccountID=%d Email=%q", g.AccountID, g.Email)
	}
}

func testSetAccountOptOut(t *testing.T, s registry.Store) {
	ctx := t.Context()
	a := create(t, s, newGateway("a"), "o@example.org")
	create(t, s, newGateway("b"), "o@example.org")
	create(t, s, newGateway("c"), "p@example.org")
	if err := s.SetAccountOptOut(ctx, a.AccountID, true); err != nil {
		t.Fatalf("SetAccountOptOut: %v", err)
	}
	for name, want := range map[string]bool{"a": true, "b": true, "c": false} {
		if g := get(t, s, name); g.OptOut != want {
			t.Errorf("Gateway(%s).OptOut = %v, want %v", name, g.OptOut, want)
		}
	}
	// A gateway linked afterwards sees the account's flag.
	if d := create(t, s, newGateway("d"), "o@example.org"); !d.OptOut {
		t.Errorf("create linked to an opted-out account: OptOut = false")
	}
	if err := s.SetAccountOptOut(ctx, a.AccountID, false); err != nil {
		t.Fatalf("SetAccountOptOut(false): %v", err)
	}
	if g := get(t, s, "a"); g.OptOut {
		t.Errorf("OptOut still set after clearing")
	}
}

func testDeleteGatewayCascades(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("gone"), "")
	create(t, s, newGateway("stays"), "")
	recs := []registry.Record{rec("_acme-challenge", "TXT", "x", base), rec("www", "CNAME", "gone.example.org.", base)}
	for _, name := range []string{"gone", "stays"} {
		if err := s.AppendRecords(ctx, gw(name), recs, registry.AtMost(10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteGateway(ctx, "gone"); err != nil {
		t.Fatalf("DeleteGateway: %v", err)
	}
	_, err := s.Gateway(ctx, "gone")
	wantErr(t, "Gateway after delete", err, registry.ErrNotFound)
	_, err = s.GatewayByToken(ctx, hash("token-gone"))
	wantErr(t, "GatewayByToken after delete", err, registry.ErrNotFound)
	_, err = s.Records(ctx, gw("gone"))
	wantErr(t, "Records after delete", err, registry.ErrNotFound)
	wantErr(t, "second DeleteGateway", s.DeleteGateway(ctx, "gone"), registry.ErrNotFound)
	// The name is free again, and its old records went with it.
	create(t, s, newGateway("gone"), "")
	wantRecords(t, s, "gone")
	wantRecords(t, s, "stays", "_acme-challenge/TXT/x", "www/CNAME/gone.example.org.")
}

func testPingBatch(t *testing.T, s registry.Store) {
	ctx := t.Context()
	if res := s.PingBatch(ctx, nil); len(res) != 0 {
		t.Errorf("empty batch gave %d results", len(res))
	}
	a := newGateway("a")
	a.PublicV6 = netip.MustParseAddr("2001:db8::a")
	a.LocalAddrs = []netip.Addr{netip.MustParseAddr("192.168.0.10")}
	create(t, s, a, "a@example.org")
	b := newGateway("b")
	b.LocalAddrs = []netip.Addr{netip.MustParseAddr("192.168.0.11")}
	create(t, s, b, "")

	at := base.Add(time.Minute)
	res := s.PingBatch(ctx, []registry.PingRequest{
		// Only an IPv4 seen: IPv6 and LAN addresses stay as stored.
		{TokenHash: hash("token-a"), At: at, PublicV4: netip.MustParseAddr("198.51.100.10")},
		{TokenHash: hash("unknown"), At: at, PublicV4: netip.MustParseAddr("198.51.100.99")},
		// A non-nil empty LAN list clears the stored one.
		{TokenHash: hash("token-b"), At: at.Add(time.Second), PublicV4: netip.MustParseAddr("198.51.100.11"),
			PublicV6: netip.MustParseAddr("2001:db8::b"), LocalAddrs: []netip.Addr{}},
		{TokenHash: nil, At: at},
	})
	if len(res) != 4 {
		t.Fatalf("PingBatch gave %d results for 4 pings", len(res))
	}
	wantA := *a
	wantA.LastPing, wantA.PublicV4 = at, netip.MustParseAddr("198.51.100.10")
	wantB := *b
	wantB.LastPing, wantB.PublicV4, wantB.PublicV6, wantB.LocalAddrs = at.Add(time.Second),
		netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("2001:db8::b"), nil
	for i, want := range map[int]*registry.Gateway{0: &wantA, 2: &wantB} {
		r := res[i]
		if r.Err != nil || r.WasExpired {
			t.Errorf("result %d: Err=%v WasExpired=%v", i, r.Err, r.WasExpired)
			continue
		}
		checkGateway(t, fmt.Sprintf("result %d", i), r.Gateway, want)
		checkGateway(t, "stored "+want.Name, get(t, s, want.Name), want)
	}
	for _, i := range []int{1, 3} {
		if !errors.Is(res[i].Err, registry.ErrNotFound) || res[i].Gateway != nil {
			t.Errorf("result %d: Err=%v Gateway=%v, want ErrNotFound only", i, res[i].Err, res[i].Gateway)
		}
	}

	// New LAN addresses replace the old ones.
	lan := []netip.Addr{netip.MustParseAddr("10.1.1.1"), netip.MustParseAddr("fd00::1")}
	res = s.PingBatch(ctx, []registry.PingRequest{{TokenHash: hash("token-a"), At: at.Add(time.Minute), LocalAddrs: lan}})
	if res[0].Err != nil || !slices.Equal(res[0].Gateway.LocalAddrs, lan) || res[0].Gateway.PublicV4 != wantA.PublicV4 {
		t.Errorf("second ping of a: %+v", res[0])
	}
}

func testExpireThenPing(t *testing.T, s registry.Store) {
	ctx := t.Context()
	old := newGateway("old") // pinged, but long ago
	old.Created, old.LastPing = base.Add(-10*time.Hour), base.Add(-2*time.Hour)
	old.PublicV4, old.PublicV6 = netip.MustParseAddr("198.51.100.20"), netip.MustParseAddr("2001:db8::20")
	old.LocalAddrs = []netip.Addr{netip.MustParseAddr("192.168.20.1")}
	create(t, s, old, "")
	never := newGateway("never") // never pinged, created long ago
	never.Created = base.Add(-3 * time.Hour)
	create(t, s, never, "")
	recent := newGateway("recent") // created long ago, pinged lately
	recent.Created, recent.LastPing = base.Add(-3*time.Hour), base.Add(-10*time.Minute)
	recent.PublicV4 = netip.MustParseAddr("198.51.100.21")
	create(t, s, recent, "")
	young := newGateway("young") // never pinged, created lately
	young.Created = base.Add(-10 * time.Minute)
	create(t, s, young, "")
	already := newGateway("already")
	already.Created, already.Expired = base.Add(-5*time.Hour), true
	create(t, s, already, "")

	cutoff := base.Add(-time.Hour)
	names, err := s.ExpireSilent(ctx, cutoff)
	if err != nil {
		t.Fatalf("ExpireSilent: %v", err)
	}
	if want := []string{"never", "old"}; !slices.Equal(names, want) {
		t.Errorf("ExpireSilent = %q, want %q", names, want)
	}
	wantOld := *old
	wantOld.Expired, wantOld.PublicV4, wantOld.PublicV6, wantOld.LocalAddrs = true, netip.Addr{}, netip.Addr{}, nil
	checkGateway(t, "expired old", get(t, s, "old"), &wantOld)
	checkGateway(t, "untouched recent", get(t, s, "recent"), recent)
	checkGateway(t, "untouched young", get(t, s, "young"), young)
	if names, err := s.ExpireSilent(ctx, cutoff); err != nil || len(names) != 0 {
		t.Errorf("second ExpireSilent = %q, %v; want nothing", names, err)
	}

	// A ping brings the gateway back and says so, once: the second ping
	// of the same batch finds it live already.
	at := base.Add(time.Minute)
	ping := registry.PingRequest{TokenHash: hash("token-old"), At: at, PublicV4: netip.MustParseAddr("198.51.100.22")}
	res := s.PingBatch(ctx, []registry.PingRequest{ping, ping, {TokenHash: hash("token-recent"), At: at}})
	if res[0].Err != nil || !res[0].WasExpired || res[0].Gateway.Expired {
		t.Errorf("first ping of expired gateway: %+v", res[0])
	}
	if res[1].Err != nil || res[1].WasExpired || res[1].Gateway.Expired {
		t.Errorf("second ping in the same batch: %+v", res[1])
	}
	if res[2].Err != nil || res[2].WasExpired {
		t.Errorf("ping of a live gateway: %+v", res[2])
	}
	wantOld.Expired, wantOld.LastPing, wantOld.PublicV4 = false, at, ping.PublicV4
	checkGateway(t, "revived old", get(t, s, "old"), &wantOld)
	res = s.PingBatch(ctx, []registry.PingRequest{ping})
	if res[0].Err != nil || res[0].WasExpired {
		t.Errorf("next batch's ping: %+v", res[0])
	}
	// never is still expired; it did not ping.
	if g := get(t, s, "never"); !g.Expired {
		t.Errorf("never was revived without a ping")
	}
}

func testGatewaysByPublicIP(t *testing.T, s registry.Store) {
	ctx := t.Context()
	v4, v6 := netip.MustParseAddr("198.51.100.30"), netip.MustParseAddr("2001:db8::30")
	mk := func(name string, a4, a6 string, expired bool) {
		g := newGateway(name)
		if a4 != "" {
			g.PublicV4 = netip.MustParseAddr(a4)
		}
		if a6 != "" {
			g.PublicV6 = netip.MustParseAddr(a6)
		}
		g.Expired = expired
		create(t, s, g, "")
	}
	mk("c-both", "198.51.100.30", "2001:db8::30", false)
	mk("a-v4", "198.51.100.30", "2001:db8::31", false)
	mk("b-v6", "198.51.100.31", "2001:db8::30", false)
	mk("d-expired", "198.51.100.30", "2001:db8::30", true)
	mk("e-none", "", "", false)

	check := func(ip netip.Addr, want ...string) {
		t.Helper()
		gs, err := s.GatewaysByPublicIP(ctx, ip)
		if err != nil {
			t.Fatalf("GatewaysByPublicIP(%v): %v", ip, err)
		}
		var got []string
		for _, g := range gs {
			got = append(got, g.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("GatewaysByPublicIP(%v) = %q, want %q", ip, got, want)
		}
	}
	check(v4, "a-v4", "c-both")
	check(v6, "b-v6", "c-both")
	// An IPv4 address seen on a dual-stack socket arrives mapped.
	check(netip.AddrFrom16(v4.As16()), "a-v4", "c-both")
	check(netip.MustParseAddr("203.0.113.1"))
	check(netip.MustParseAddr("2001:db8::ffff"))

	gs, err := s.GatewaysByPublicIP(ctx, v4)
	if err == nil && len(gs) > 0 {
		checkGateway(t, "listed gateway", gs[0], get(t, s, gs[0].Name))
	}
}

func testForEachGateway(t *testing.T, s registry.Store) {
	ctx := t.Context()
	calls := 0
	if err := s.ForEachGateway(ctx, func(*registry.Gateway, []registry.Record) error { calls++; return nil }); err != nil || calls != 0 {
		t.Errorf("ForEachGateway on an empty store: %d calls, %v", calls, err)
	}
	for _, name := range []string{"charlie", "alpha", "bravo"} {
		create(t, s, newGateway(name), name+"@example.org")
	}
	if err := s.AppendRecords(ctx, gw("alpha"), []registry.Record{
		rec("_acme-challenge", "TXT", "second", base.Add(2*time.Second)),
		rec("_acme-challenge", "TXT", "first", base.Add(time.Second)),
	}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendRecords(ctx, gw("charlie"), []registry.Record{rec("www", "A", "192.0.2.3", base)}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	var names []string
	got := map[string][]string{}
	err := s.ForEachGateway(ctx, func(g *registry.Gateway, recs []registry.Record) error {
		names = append(names, g.Name)
		got[g.Name] = recKeys(recs)
		for _, r := range recs {
			if r.Subtree != gw(g.Name) {
				t.Errorf("record of %s says %v", g.Name, r.Subtree)
			}
		}
		checkGateway(t, "ForEachGateway "+g.Name, g, get(t, s, g.Name))
		return nil
	})
	if err != nil {
		t.Fatalf("ForEachGateway: %v", err)
	}
	if want := []string{"alpha", "bravo", "charlie"}; !slices.Equal(names, want) {
		t.Errorf("ForEachGateway order = %q, want %q", names, want)
	}
	want := map[string][]string{
		"alpha":   {"_acme-challenge/TXT/first", "_acme-challenge/TXT/second"},
		"bravo":   {},
		"charlie": {"www/A/192.0.2.3"},
	}
	for name, w := range want {
		if !slices.Equal(got[name], w) {
			t.Errorf("records of %s = %q, want %q", name, got[name], w)
		}
	}

	calls = 0
	err = s.ForEachGateway(ctx, func(*registry.Gateway, []registry.Record) error { calls++; return errBoom })
	wantErr(t, "ForEachGateway stopped by fn", err, errBoom)
	if calls != 1 {
		t.Errorf("fn called %d times after failing", calls)
	}
}

func testCountGateways(t *testing.T, s registry.Store) {
	ctx := t.Context()
	count := func(want int) {
		t.Helper()
		if n, err := s.CountGateways(ctx); err != nil || n != want {
			t.Errorf("CountGateways = %d, %v; want %d", n, err, want)
		}
	}
	count(0)
	for _, name := range []string{"a", "b", "c"} {
		create(t, s, newGateway(name), "")
	}
	count(3)
	if err := s.DeleteGateway(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	count(2)
}

func testRecordsOrder(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("g"), "")
	wantRecords(t, s, "g")
	in := []registry.Record{
		{Owner: "www", Type: "A", Value: "192.0.2.1", TTL: 300 * time.Second, Created: base.Add(3 * time.Second)},
		{Owner: "", Type: "TXT", Value: "hello world", TTL: 60 * time.Second, Created: base.Add(time.Second)},
		{Owner: "_acme-challenge.www", Type: "TXT", Value: "tok", TTL: 10 * time.Second, Created: base.Add(2 * time.Second)},
	}
	if err := s.AppendRecords(ctx, gw("g"), in, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	got := records(t, s, "g")
	want := []registry.Record{in[1], in[2], in[0]}
	if len(got) != len(want) {
		t.Fatalf("Records = %v, want %v", got, want)
	}
	for i := range want {
		w := want[i]
		w.Subtree = gw("g")
		g := got[i]
		if g.Subtree != w.Subtree || g.Owner != w.Owner || g.Type != w.Type || g.Value != w.Value ||
			g.TTL != w.TTL || !g.Created.Equal(w.Created) || g.Created.Location() != time.UTC {
			t.Errorf("record %d = %+v, want %+v", i, g, w)
		}
	}
	// A zero Created is set by the store, so the record sorts last.
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{{Owner: "new", Type: "TXT", Value: "v", TTL: time.Minute}}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	got = records(t, s, "g")
	if last := got[len(got)-1]; last.Owner != "new" || time.Since(last.Created) > time.Minute {
		t.Errorf("record without Created: %+v", last)
	}
}

func testAppendDedupes(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("g"), "")
	a := rec("_acme-challenge", "TXT", "a", base)
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{a, rec("_acme-challenge", "TXT", "b", base.Add(time.Second))}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	again := a
	again.TTL, again.Created = 5*time.Second, base.Add(time.Hour)
	c := rec("_acme-challenge", "TXT", "c", base.Add(2*time.Second))
	// a exists already, c comes twice: three records, and a kept as first stored.
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{again, c, c}, registry.AtMost(3)); err != nil {
		t.Fatalf("AppendRecords with duplicates: %v", err)
	}
	got := records(t, s, "g")
	if keys := recKeys(got); !slices.Equal(keys, []string{"_acme-challenge/TXT/a", "_acme-challenge/TXT/b", "_acme-challenge/TXT/c"}) {
		t.Fatalf("Records = %q", keys)
	}
	if got[0].TTL != a.TTL || !got[0].Created.Equal(a.Created) {
		t.Errorf("duplicate replaced the stored record: %+v", got[0])
	}
	// The same value under another owner or type is another record.
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{rec("www", "TXT", "a", base.Add(3*time.Second)),
		rec("_acme-challenge", "CNAME", "a", base.Add(4*time.Second))}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	if n := len(records(t, s, "g")); n != 5 {
		t.Errorf("%d records, want 5", n)
	}
}

func testAppendTooMany(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("g"), "")
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{rec("", "TXT", "1", base), rec("", "TXT", "2", base.Add(time.Second))}, registry.AtMost(2)); err != nil {
		t.Fatal(err)
	}
	err := s.AppendRecords(ctx, gw("g"), []registry.Record{rec("", "TXT", "3", base), rec("", "TXT", "4", base)}, registry.AtMost(3))
	wantErr(t, "AppendRecords past max", err, registry.ErrTooMany)
	wantRecords(t, s, "g", "/TXT/1", "/TXT/2")
	// Identical records do not count against max.
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{rec("", "TXT", "1", base)}, registry.AtMost(2)); err != nil {
		t.Errorf("re-appending a stored record at max: %v", err)
	}
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{rec("", "TXT", "3", base.Add(2*time.Second))}, registry.AtMost(3)); err != nil {
		t.Errorf("appending up to max: %v", err)
	}
	wantRecords(t, s, "g", "/TXT/1", "/TXT/2", "/TXT/3")
}

func testSetRecords(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("g"), "")
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{
		rec("_acme-challenge", "TXT", "v1", base),
		rec("_acme-challenge", "TXT", "v2", base.Add(1*time.Second)),
		rec("www", "CNAME", "g.example.org.", base.Add(2*time.Second)),
		rec("_acme-challenge.www", "TXT", "w1", base.Add(3*time.Second)),
		rec("_acme-challenge", "A", "192.0.2.9", base.Add(4*time.Second)),
	}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	// Only the (_acme-challenge, TXT) RRset is replaced; the A record of
	// the same owner stays.
	if err := s.SetRecords(ctx, gw("g"), []registry.Record{rec("_acme-challenge", "TXT", "v3", base.Add(5*time.Second))}, registry.AtMost(10)); err != nil {
		t.Fatalf("SetRecords: %v", err)
	}
	wantRecords(t, s, "g", "www/CNAME/g.example.org.", "_acme-challenge.www/TXT/w1", "_acme-challenge/A/192.0.2.9", "_acme-challenge/TXT/v3")

	// Two RRsets at once, one of them with two values.
	if err := s.SetRecords(ctx, gw("g"), []registry.Record{
		rec("www", "CNAME", "h.example.org.", base.Add(6*time.Second)),
		rec("_acme-challenge.www", "TXT", "w2", base.Add(7*time.Second)),
		rec("_acme-challenge.www", "TXT", "w3", base.Add(8*time.Second)),
	}, registry.AtMost(10)); err != nil {
		t.Fatalf("SetRecords: %v", err)
	}
	want := []string{"_acme-challenge/A/192.0.2.9", "_acme-challenge/TXT/v3", "www/CNAME/h.example.org.",
		"_acme-challenge.www/TXT/w2", "_acme-challenge.www/TXT/w3"}
	wantRecords(t, s, "g", want...)

	// Past max, nothing changes: not even the RRsets already cleared
	// inside the transaction.
	err := s.SetRecords(ctx, gw("g"), []registry.Record{
		rec("_acme-challenge", "TXT", "x1", base.Add(9*time.Second)),
		rec("_acme-challenge", "TXT", "x2", base.Add(9*time.Second)),
		rec("new", "TXT", "x3", base.Add(9*time.Second)),
		rec("new", "TXT", "x4", base.Add(9*time.Second)),
	}, registry.AtMost(6))
	wantErr(t, "SetRecords past max", err, registry.ErrTooMany)
	wantRecords(t, s, "g", want...)

	// Replacing an RRset by the same size stays within max.
	if err := s.SetRecords(ctx, gw("g"), []registry.Record{
		rec("_acme-challenge.www", "TXT", "w4", base.Add(10*time.Second)),
		rec("_acme-challenge.www", "TXT", "w5", base.Add(10*time.Second)),
	}, registry.AtMost(5)); err != nil {
		t.Errorf("SetRecords at max: %v", err)
	}
}

func testDeleteRecords(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("g"), "")
	create(t, s, newGateway("other"), "")
	all := []registry.Record{
		rec("", "TXT", "apex", base),
		rec("_acme-challenge", "TXT", "x", base.Add(1*time.Second)),
		rec("_acme-challenge", "TXT", "y", base.Add(2*time.Second)),
		rec("www", "A", "192.0.2.1", base.Add(3*time.Second)),
		rec("www", "TXT", "z", base.Add(4*time.Second)),
	}
	for _, name := range []string{"g", "other"} {
		if err := s.AppendRecords(ctx, gw(name), all, registry.AtMost(10)); err != nil {
			t.Fatal(err)
		}
	}
	del := func(filters []registry.RecordFilter, want ...string) {
		t.Helper()
		got, err := s.DeleteRecords(ctx, gw("g"), filters)
		if err != nil {
			t.Fatalf("DeleteRecords(%v): %v", filters, err)
		}
		if keys := recKeys(got); !slices.Equal(keys, want) {
			t.Errorf("DeleteRecords(%+v) removed %q, want %q", filters, keys, want)
		}
		for _, r := range got {
			if r.Subtree != gw("g") || r.TTL != time.Minute || r.Created.IsZero() {
				t.Errorf("removed record %+v lacks its fields", r)
			}
		}
	}
	del(nil)
	del([]registry.RecordFilter{{Owner: ptr("_acme-challenge"), Type: "TXT", Value: "x"}}, "_acme-challenge/TXT/x")
	// Owner "" is the name itself, not "any owner".
	del([]registry.RecordFilter{{Owner: ptr("")}}, "/TXT/apex")
	// Any filter matches; results come oldest first whatever the filter order.
	del([]registry.RecordFilter{{Owner: ptr("www"), Type: "A"}, {Value: "y"}}, "_acme-challenge/TXT/y", "www/A/192.0.2.1")
	del([]registry.RecordFilter{{Type: "CNAME"}})
	// Overlapping filters report a record once.
	del([]registry.RecordFilter{{}, {Type: "TXT"}}, "www/TXT/z")
	wantRecords(t, s, "g")
	// Another gateway's records are never touched.
	if n := len(records(t, s, "other")); n != len(all) {
		t.Errorf("other gateway has %d records left, want %d", n, len(all))
	}
}

func testPruneRecords(t *testing.T, s registry.Store) {
	ctx := t.Context()
	for _, name := range []string{"a", "b", "c"} {
		create(t, s, newGateway(name), "")
	}
	old, fresh := base.Add(-2*time.Hour), base
	add := func(name string, recs ...registry.Record) {
		if err := s.AppendRecords(ctx, gw(name), recs, registry.AtMost(10)); err != nil {
			t.Fatal(err)
		}
	}
	add("a", rec("_acme-challenge", "TXT", "old", old), rec("_acme-challenge", "TXT", "new", fresh))
	add("b", rec("_acme-challenge", "TXT", "old", old), rec("www", "TXT", "old", old), rec("_acme-challenge", "A", "192.0.2.1", old.Add(-time.Second)))
	add("c", rec("_acme-challenge", "TXT", "new", fresh))

	got, err := s.PruneRecords(ctx, "_acme-challenge", "TXT", base.Add(-time.Hour))
	if err != nil {
		t.Fatalf("PruneRecords: %v", err)
	}
	if want := []registry.Subtree{gw("a"), gw("b")}; !slices.Equal(got, want) {
		t.Errorf("PruneRecords = %q, want %q", got, want)
	}
	wantRecords(t, s, "a", "_acme-challenge/TXT/new")
	wantRecords(t, s, "b", "_acme-challenge/A/192.0.2.1", "www/TXT/old")
	wantRecords(t, s, "c", "_acme-challenge/TXT/new")
	if got, err := s.PruneRecords(ctx, "_acme-challenge", "TXT", base.Add(-time.Hour)); err != nil || len(got) != 0 {
		t.Errorf("second PruneRecords = %q, %v", got, err)
	}
}

func testConcurrentCreate(t *testing.T, s registry.Store) {
	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			g := newGateway("contested")
			g.TokenHash = hash(fmt.Sprint("contender ", i))
			email := ""
			if i%2 == 0 {
				email = fmt.Sprintf("c%d@example.org", i)
			}
			<-start
			errs[i] = s.CreateGateway(t.Context(), g, email)
		})
	}
	close(start)
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Errorf("contenders %d and %d both created the name", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, registry.ErrNameTaken):
			t.Errorf("contender %d: %v, want ErrNameTaken", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no contender created the name")
	}
	g := get(t, s, "contested")
	if !bytes.Equal(g.TokenHash, hash(fmt.Sprint("contender ", won))) {
		t.Errorf("stored token is not the winner's")
	}
	if n, err := s.CountGateways(t.Context()); err != nil || n != 1 {
		t.Errorf("CountGateways = %d, %v; want 1", n, err)
	}
}

func testCancelledContext(t *testing.T, s registry.Store) {
	orig := create(t, s, newGateway("c"), "orig@example.org")

	// Cancelled while the transaction is open, after fn changed the
	// gateway and asked for a new account.
	ctx, cancel := context.WithCancel(t.Context())
	_, err := s.UpdateGateway(ctx, "c", func(g *registry.Gateway) (*string, error) {
		g.Description = "half written"
		g.Expired = true
		cancel()
		return ptr("new@example.org"), nil
	})
	if err == nil {
		t.Errorf("UpdateGateway succeeded after its context was cancelled")
	}
	checkGateway(t, "Gateway(c) after cancelled update", get(t, s, "c"), orig)

	// Cancelled before it starts.
	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	if err := s.CreateGateway(ctx, newGateway("never"), "never@example.org"); err == nil {
		t.Errorf("CreateGateway succeeded with a cancelled context")
	}
	_, err = s.Gateway(t.Context(), "never")
	wantErr(t, "Gateway(never)", err, registry.ErrNotFound)
	for i, r := range s.PingBatch(ctx, []registry.PingRequest{{TokenHash: hash("token-c"), At: base}}) {
		if r.Err == nil {
			t.Errorf("ping %d succeeded with a cancelled context", i)
		}
	}
	checkGateway(t, "Gateway(c) after cancelled ping", get(t, s, "c"), orig)

	// Cancelled at assorted points of a larger write: all or nothing.
	const n = 200
	batch := make([]registry.Record, n)
	for i := range batch {
		batch[i] = rec("_acme-challenge", "TXT", fmt.Sprint("v", i), base.Add(time.Duration(i)*time.Microsecond))
	}
	interrupted := 0
	for i := range 40 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Duration(i*i)*20*time.Microsecond)
		err := s.AppendRecords(ctx, gw("c"), batch, registry.AtMost(n))
		cancel()
		got := len(records(t, s, "c"))
		if err != nil {
			interrupted++
		}
		if got != 0 && got != n {
			t.Fatalf("attempt %d (error %v) left %d of %d records", i, err, got, n)
		}
		if err == nil && got != n {
			t.Fatalf("attempt %d succeeded but %d of %d records are stored", i, got, n)
		}
		if _, err := s.DeleteRecords(t.Context(), gw("c"), []registry.RecordFilter{{}}); err != nil {
			t.Fatal(err)
		}
	}
	if interrupted == 0 {
		t.Logf("no AppendRecords was interrupted; the store is faster than the shortest timeout")
	}
}
