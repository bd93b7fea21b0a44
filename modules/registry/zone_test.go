package registry_test

import (
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

// The zone's subtree accepts TXT records at _acme-challenge and nothing
// else, under the limits of a gateway's records.
func TestZoneRecordRules(t *testing.T) {
	ctx := t.Context()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg := registry.New(store, registry.Config{}, nil)
	for _, tc := range []struct {
		rec  registry.Record
		want error
	}{
		{registry.Record{Owner: "_ACME-Challenge.", Type: "txt", Value: "v"}, nil},
		{registry.Record{Owner: "_acme-challenge", Type: "A", Value: "192.0.2.1"}, registry.ErrOutsideSubtree},
		{registry.Record{Owner: "", Type: "TXT", Value: "v"}, registry.ErrOutsideSubtree},
		{registry.Record{Owner: "www", Type: "TXT", Value: "v"}, registry.ErrOutsideSubtree},
		{registry.Record{Owner: "_acme-challenge.gw", Type: "TXT", Value: "v"}, registry.ErrOutsideSubtree},
		{registry.Record{Owner: "_acme-challenge", Type: "TXT", Value: "a\x00b"}, registry.ErrInvalidInput},
		{registry.Record{Owner: "_acme-challenge", Type: "MX", Value: "10 mx."}, registry.ErrUnsupportedType},
	} {
		got, err := reg.AppendRecords(ctx, registry.ZoneSubtree(), []registry.Record{tc.rec})
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("AppendRecords(zone, %+v) = %v, want %v", tc.rec, err, tc.want)
		}
		if tc.want == nil {
			if rec := got[0]; rec.Owner != registry.ZoneChallenge || rec.Type != "TXT" || rec.TTL != 5*time.Minute || rec.Subtree != registry.ZoneSubtree() {
				t.Errorf("not normalised: %+v", rec)
			}
		}
	}
}

// The registry tells observers of every change of the zone's records,
// through its own writes, a reload announced by another node, and the
// sweep of forgotten challenges.
func TestZoneRecordEvents(t *testing.T) {
	ctx := t.Context()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg := registry.New(store, registry.Config{ChallengeLifetime: time.Hour, SweepInterval: time.Hour}, nil)
	var mu sync.Mutex
	var seen [][]string
	reg.Observe(func(ev registry.Event) {
		if !ev.Subtree.IsZone() || ev.Name() != "" || ev.Gateway != nil || !ev.RecordsChanged {
			t.Errorf("zone event %+v", ev)
		}
		var vals []string
		for _, r := range ev.Records {
			vals = append(vals, r.Value)
		}
		mu.Lock()
		seen = append(seen, vals)
		mu.Unlock()
	})
	wantSeen := func(want ...string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 || !slices.Equal(seen[len(seen)-1], want) {
			t.Fatalf("last zone event %q, want %q", seen, want)
		}
		seen = nil
	}

	if _, err := reg.AppendRecords(ctx, registry.ZoneSubtree(), []registry.Record{{Owner: "_acme-challenge", Type: "TXT", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	wantSeen("a")
	if _, err := reg.SetRecords(ctx, registry.ZoneSubtree(), []registry.Record{{Owner: "_acme-challenge", Type: "TXT", Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	wantSeen("b")
	if _, err := reg.AppendRecords(ctx, registry.ZoneSubtree(), []registry.Record{{Owner: "www", Type: "TXT", Value: "x"}}); !errors.Is(err, registry.ErrOutsideSubtree) {
		t.Fatalf("append outside the challenge: %v", err)
	}
	if _, err := reg.DeleteRecords(ctx, registry.ZoneSubtree(), []registry.RecordFilter{{Value: "b"}}); !errors.Is(err, registry.ErrOutsideSubtree) {
		t.Fatalf("delete without a name: %v", err)
	}
	if err := reg.Reload(ctx, registry.ZoneSubtree()); err != nil {
		t.Fatal(err)
	}
	wantSeen("b")
	old := time.Now().Add(-2 * time.Hour)
	if err := store.AppendRecords(ctx, registry.ZoneSubtree(), []registry.Record{{Owner: "_acme-challenge", Type: "TXT", Value: "stale", Created: old, TTL: time.Minute}}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	if err := reg.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	wantSeen("b")
	challenge := registry.ZoneChallenge
	if _, err := reg.DeleteRecords(ctx, registry.ZoneSubtree(), []registry.RecordFilter{{Owner: &challenge, Type: "txt"}}); err != nil {
		t.Fatal(err)
	}
	wantSeen()
}
