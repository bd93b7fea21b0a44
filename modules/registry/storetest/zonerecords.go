package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// zone is the zone's own subtree; gw names a gateway's.
var zone = registry.ZoneSubtree()

func gw(name string) registry.Subtree { return registry.GatewaySubtree(name) }

func zoneKeys(t *testing.T, s registry.Store) []string {
	t.Helper()
	recs, err := s.Records(t.Context(), zone)
	if err != nil {
		t.Fatalf("Records(zone): %v", err)
	}
	for _, r := range recs {
		if r.Subtree != zone {
			t.Errorf("zone record %+v names another subtree", r)
		}
	}
	return recKeys(recs)
}

func wantZoneRecords(t *testing.T, s registry.Store, want ...string) {
	t.Helper()
	if got := zoneKeys(t, s); !slices.Equal(got, want) {
		t.Errorf("ZoneRecords = %q, want %q", got, want)
	}
}

// testZoneRecords checks the zone's own records: append, set, delete and
// prune with the rules of a gateway's records, kept apart from every
// gateway's.
func testZoneRecords(t *testing.T, s registry.Store) {
	ctx := t.Context()
	wantZoneRecords(t, s)
	create(t, s, newGateway("g"), "")
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{rec("_acme-challenge", "TXT", "gw", base)}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}

	a := rec("_acme-challenge", "TXT", "a", base.Add(2*time.Second))
	b := rec("_acme-challenge", "TXT", "b", base.Add(time.Second))
	if err := s.AppendRecords(ctx, zone, []registry.Record{a, b, a}, registry.AtMost(3)); err != nil {
		t.Fatalf("AppendZoneRecords: %v", err)
	}
	wantZoneRecords(t, s, "_acme-challenge/TXT/b", "_acme-challenge/TXT/a")
	// An identical record is kept as stored, not duplicated.
	again := a
	again.TTL = 5 * time.Second
	if err := s.AppendRecords(ctx, zone, []registry.Record{again}, registry.AtMost(2)); err != nil {
		t.Fatalf("AppendZoneRecords of a record already there: %v", err)
	}
	recs, _ := s.Records(ctx, zone)
	if recs[1].TTL != a.TTL || !recs[1].Created.Equal(a.Created) || recs[1].Created.Location() != time.UTC {
		t.Errorf("stored zone record %+v, want %+v", recs[1], a)
	}
	err := s.AppendRecords(ctx, zone, []registry.Record{rec("_acme-challenge", "TXT", "c", base)}, registry.AtMost(2))
	wantErr(t, "AppendRecords(zone) past max", err, registry.ErrTooMany)
	wantZoneRecords(t, s, "_acme-challenge/TXT/b", "_acme-challenge/TXT/a")

	// Set replaces the RRset, and past max changes nothing.
	if err := s.SetRecords(ctx, zone, []registry.Record{rec("_acme-challenge", "TXT", "c", base.Add(3*time.Second))}, registry.AtMost(2)); err != nil {
		t.Fatalf("SetZoneRecords: %v", err)
	}
	wantZoneRecords(t, s, "_acme-challenge/TXT/c")
	err = s.SetRecords(ctx, zone, []registry.Record{rec("_acme-challenge", "TXT", "x", base), rec("_acme-challenge", "TXT", "y", base)}, registry.AtMost(1))
	wantErr(t, "SetRecords(zone) past max", err, registry.ErrTooMany)
	wantZoneRecords(t, s, "_acme-challenge/TXT/c")

	// Delete with libdns filters: the TTL must match when given.
	if err := s.AppendRecords(ctx, zone, []registry.Record{rec("_acme-challenge", "TXT", "d", base.Add(4*time.Second))}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	got, err := s.DeleteRecords(ctx, zone, []registry.RecordFilter{{Owner: ptr("_acme-challenge"), Value: "c", TTL: time.Hour}})
	if err != nil || len(got) != 0 {
		t.Fatalf("DeleteZoneRecords with another TTL removed %v, %v", recKeys(got), err)
	}
	got, err = s.DeleteRecords(ctx, zone, []registry.RecordFilter{{Owner: ptr("_acme-challenge"), Type: "TXT", TTL: time.Minute}, {Value: "d"}})
	if err != nil {
		t.Fatal(err)
	}
	if keys := recKeys(got); !slices.Equal(keys, []string{"_acme-challenge/TXT/c", "_acme-challenge/TXT/d"}) {
		t.Errorf("DeleteZoneRecords removed %q", keys)
	}
	wantZoneRecords(t, s)
	// The gateway's record of the same name was never touched.
	wantRecords(t, s, "g", "_acme-challenge/TXT/gw")

	// Prune removes stale challenges only, and says whether it did.
	if err := s.AppendRecords(ctx, zone, []registry.Record{
		rec("_acme-challenge", "TXT", "old", base.Add(-2*time.Hour)),
		rec("_acme-challenge", "TXT", "new", base),
	}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	pruned, err := s.PruneRecords(ctx, "_acme-challenge", "TXT", base.Add(-time.Hour))
	if err != nil || !slices.Equal(pruned, []registry.Subtree{zone}) {
		t.Fatalf("PruneRecords = %v, %v", pruned, err)
	}
	wantZoneRecords(t, s, "_acme-challenge/TXT/new")
	if pruned, err := s.PruneRecords(ctx, "_acme-challenge", "TXT", base.Add(-time.Hour)); err != nil || len(pruned) != 0 {
		t.Errorf("second PruneRecords = %v, %v", pruned, err)
	}
	// The fresh gateway record of the same name was kept; one prune
	// reaches every subtree and names each it changed.
	wantRecords(t, s, "g", "_acme-challenge/TXT/gw")
	pruned, err = s.PruneRecords(ctx, "_acme-challenge", "TXT", base.Add(time.Hour))
	if err != nil || !slices.Equal(pruned, []registry.Subtree{gw("g"), zone}) {
		t.Fatalf("PruneRecords of everything = %v, %v", pruned, err)
	}
	wantZoneRecords(t, s)
	wantRecords(t, s, "g")
}

// testDeleteRecordsTTL checks that a filter's TTL, when given, must match.
func testDeleteRecordsTTL(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("g"), "")
	if err := s.AppendRecords(ctx, gw("g"), []registry.Record{rec("www", "TXT", "a", base)}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	got, err := s.DeleteRecords(ctx, gw("g"), []registry.RecordFilter{{Owner: ptr("www"), TTL: time.Hour}})
	if err != nil || len(got) != 0 {
		t.Fatalf("DeleteRecords with another TTL removed %q, %v", recKeys(got), err)
	}
	got, err = s.DeleteRecords(ctx, gw("g"), []registry.RecordFilter{{Owner: ptr("www"), TTL: time.Minute}})
	if err != nil || !slices.Equal(recKeys(got), []string{"www/TXT/a"}) {
		t.Fatalf("DeleteRecords with the TTL removed %q, %v", recKeys(got), err)
	}
}

// onlyOneType is a RecordCheck that refuses two types at one owner, the
// shape of the registry's CNAME rule, so that the suite checks what the
// check is given without depending on the registry's rules.
func onlyOneType(all []registry.Record) error {
	types := map[string]string{}
	for _, r := range all {
		if t, ok := types[r.Owner]; ok && t != r.Type {
			return registry.ErrConflict
		}
		types[r.Owner] = r.Type
	}
	return nil
}

// testRecordCheck checks that a write's check sees the subtree's records
// as the write leaves them, those of earlier writes included, and of that
// subtree only; a refusal writes nothing.
func testRecordCheck(t *testing.T, s registry.Store) {
	ctx := t.Context()
	create(t, s, newGateway("g"), "")
	create(t, s, newGateway("h"), "")
	for _, sub := range []registry.Subtree{gw("g"), zone} {
		if err := s.AppendRecords(ctx, sub, []registry.Record{rec("a", "TXT", "x", base)}, onlyOneType); err != nil {
			t.Fatal(err)
		}
		err := s.AppendRecords(ctx, sub, []registry.Record{rec("b", "TXT", "y", base), rec("a", "CNAME", "t.example.", base)}, onlyOneType)
		wantErr(t, "AppendRecords beside an earlier write", err, registry.ErrConflict)
		err = s.SetRecords(ctx, sub, []registry.Record{rec("a", "CNAME", "t.example.", base)}, onlyOneType)
		wantErr(t, "SetRecords beside an earlier write", err, registry.ErrConflict)
		// Replacing the one RRset there passes: the check sees the set
		// after the write.
		if err := s.SetRecords(ctx, sub, []registry.Record{rec("a", "TXT", "z", base)}, onlyOneType); err != nil {
			t.Errorf("SetRecords of the same type: %v", err)
		}
		got, err := s.Records(ctx, sub)
		if err != nil || !slices.Equal(recKeys(got), []string{"a/TXT/z"}) {
			t.Errorf("Records(%v) = %q, %v", sub, recKeys(got), err)
		}
	}
	// Another subtree's records are none of the check's business.
	if err := s.AppendRecords(ctx, gw("h"), []registry.Record{rec("a", "CNAME", "t.example.", base)}, onlyOneType); err != nil {
		t.Errorf("a CNAME in another subtree: %v", err)
	}
	wantErr(t, "the zero subtree", s.AppendRecords(ctx, registry.Subtree{}, []registry.Record{rec("a", "TXT", "x", base)}, onlyOneType), registry.ErrInvalidInput)
}

// testRecordCheckConcurrent races writers of conflicting types at one
// owner: the check runs inside each write's transaction, so exactly one
// type wins, in a gateway's subtree as in the zone's.
func testRecordCheckConcurrent(t *testing.T, s registry.Store) {
	create(t, s, newGateway("g"), "")
	for _, sub := range []registry.Subtree{gw("g"), zone} {
		const n = 10
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				r := rec("a", "TXT", fmt.Sprint("v", i), base)
				if i%2 == 1 {
					r = rec("a", "CNAME", fmt.Sprintf("t%d.example.", i), base)
				}
				<-start
				errs[i] = s.AppendRecords(t.Context(), sub, []registry.Record{r}, onlyOneType)
			})
		}
		close(start)
		wg.Wait()
		got, err := s.Records(t.Context(), sub)
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]bool{}
		for _, r := range got {
			types[r.Type] = true
		}
		if len(types) != 1 {
			t.Errorf("%v holds types %v after concurrent writers (errors %v)", sub, types, errs)
		}
		for i, err := range errs {
			if err != nil && !errors.Is(err, registry.ErrConflict) {
				t.Errorf("writer %d: %v", i, err)
			}
		}
	}
}
