package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tempSchema names a fresh schema for one test and drops it, with
// everything in it, when the test ends.
func tempSchema(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn = testtools.PostgresDSN(t)
	var b [6]byte
	rand.Read(b[:])
	schema = "gatehouse_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return dsn, schema
}

// openIn opens a store in schema and closes it when the test ends.
func openIn(t testing.TB, dsn, schema string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, WithSchema(schema))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store {
		dsn, schema := tempSchema(t)
		return openIn(t, dsn, schema)
	})
}

// zoneKey is how key shows the zone's subtree among gateway names.
const zoneKey = "(the zone)"

// key names a subtree announced on Changes for comparison with want.
func key(s registry.Subtree) string {
	if s.IsZone() {
		return zoneKey
	}
	name, _ := s.Gateway()
	return name
}

// expectNames reads names from ch until it has all of want (in any order),
// failing after a second.
func expectNames(t *testing.T, what string, ch <-chan registry.Subtree, want ...string) {
	t.Helper()
	missing := slices.Clone(want)
	deadline := time.After(time.Second)
	for len(missing) > 0 {
		select {
		case sub, ok := <-ch:
			name := key(sub)
			if !ok {
				t.Fatalf("%s: channel closed, still waiting for %q", what, missing)
			}
			if i := slices.Index(missing, name); i >= 0 {
				missing = slices.Delete(missing, i, i+1)
			} else {
				t.Errorf("%s: unexpected change %q", what, name)
			}
		case <-deadline:
			t.Fatalf("%s: no change announced for %q within a second", what, missing)
		}
	}
}

// expectQuiet fails if ch delivers anything for a while.
func expectQuiet(t *testing.T, what string, ch <-chan registry.Subtree) {
	t.Helper()
	select {
	case sub := <-ch:
		t.Errorf("%s: unexpected change %q", what, key(sub))
	case <-time.After(200 * time.Millisecond):
	}
}

// TestChanges checks that every write of one node is announced to another
// node sharing the schema, once committed, and never to the writer itself.
func TestChanges(t *testing.T) {
	dsn, schema := tempSchema(t)
	a, b := openIn(t, dsn, schema), openIn(t, dsn, schema)
	ctx := t.Context()
	chA, err := a.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chB, err := b.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A registry in another schema of the same database hears nothing.
	_, otherSchema := tempSchema(t)
	other := openIn(t, dsn, otherSchema)
	chOther, err := other.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now().UTC().Truncate(time.Microsecond)
	gw := func(name string) *registry.Gateway {
		return &registry.Gateway{Name: name, TokenHash: registry.HashToken(name), Mode: registry.ModeTunnel, Created: now.Add(-time.Hour)}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.CreateGateway(ctx, gw("alpha"), "o@example.org"))
	expectNames(t, "CreateGateway", chB, "alpha")
	must(a.CreateGateway(ctx, gw("beta"), "o@example.org"))
	expectNames(t, "CreateGateway", chB, "beta")
	expectQuiet(t, "the writer's own channel", chA)

	// Announcements go both ways.
	must(b.AppendRecords(ctx, registry.GatewaySubtree("alpha"), []registry.Record{{Owner: "_acme-challenge", Type: "TXT", Value: "v", TTL: time.Minute}}, registry.AtMost(10)))
	expectNames(t, "AppendRecords", chA, "alpha")
	expectQuiet(t, "the writer's own channel", chB)

	_, err = a.UpdateGateway(ctx, "alpha", func(g *registry.Gateway) (*string, error) { g.Description = "x"; return nil, nil })
	must(err)
	expectNames(t, "UpdateGateway", chB, "alpha")
	// A rolled-back write announces nothing.
	_, err = a.UpdateGateway(ctx, "alpha", func(g *registry.Gateway) (*string, error) { return nil, errors.New("no") })
	if err == nil {
		t.Fatal("UpdateGateway ignored fn's error")
	}
	err = a.CreateGateway(ctx, gw("alpha"), "")
	if !errors.Is(err, registry.ErrNameTaken) {
		t.Fatalf("duplicate create: %v", err)
	}
	expectQuiet(t, "failed writes", chB)

	g, err := a.Gateway(ctx, "alpha")
	must(err)
	must(a.SetAccountOptOut(ctx, g.AccountID, true))
	expectNames(t, "SetAccountOptOut", chB, "alpha", "beta")
	res := a.PingBatch(ctx, []registry.PingRequest{{TokenHash: registry.HashToken("alpha"), At: now}, {TokenHash: registry.HashToken("beta"), At: now}})
	must(res[0].Err)
	expectNames(t, "PingBatch", chB, "alpha", "beta")
	must(a.SetRecords(ctx, registry.GatewaySubtree("beta"), []registry.Record{{Owner: "_acme-challenge", Type: "TXT", Value: "w", TTL: time.Minute}}, registry.AtMost(10)))
	expectNames(t, "SetRecords", chB, "beta")
	_, err = a.DeleteRecords(ctx, registry.GatewaySubtree("beta"), []registry.RecordFilter{{Value: "w"}})
	must(err)
	expectNames(t, "DeleteRecords", chB, "beta")
	must(a.AppendRecords(ctx, registry.GatewaySubtree("beta"), []registry.Record{{Owner: "_acme-challenge", Type: "TXT", Value: "old", TTL: time.Minute, Created: now.Add(-time.Hour)}}, registry.AtMost(10)))
	expectNames(t, "AppendRecords", chB, "beta")
	_, err = a.PruneRecords(ctx, "_acme-challenge", "TXT", now.Add(-time.Minute))
	must(err)
	expectNames(t, "PruneRecords", chB, "beta")
	_, err = a.ExpireSilent(ctx, now.Add(time.Minute))
	must(err)
	expectNames(t, "ExpireSilent", chB, "alpha", "beta")
	must(a.DeleteGateway(ctx, "beta"))
	expectNames(t, "DeleteGateway", chB, "beta")

	// The zone's own records are announced as the zone's subtree.
	zone := registry.ZoneSubtree()
	zrec := registry.Record{Owner: registry.ZoneChallenge, Type: "TXT", Value: "z", TTL: time.Minute, Created: now.Add(-time.Hour)}
	must(a.AppendRecords(ctx, zone, []registry.Record{zrec}, registry.AtMost(10)))
	expectNames(t, "AppendRecords(zone)", chB, zoneKey)
	must(b.SetRecords(ctx, zone, []registry.Record{zrec}, registry.AtMost(10)))
	expectNames(t, "SetRecords(zone)", chA, zoneKey)
	_, err = a.PruneRecords(ctx, registry.ZoneChallenge, "TXT", now.Add(-time.Minute))
	must(err)
	expectNames(t, "PruneRecords(zone)", chB, zoneKey)
	must(a.AppendRecords(ctx, zone, []registry.Record{zrec}, registry.AtMost(10)))
	expectNames(t, "AppendRecords(zone)", chB, zoneKey)
	_, err = a.DeleteRecords(ctx, zone, []registry.RecordFilter{{Value: "z"}})
	must(err)
	expectNames(t, "DeleteRecords(zone)", chB, zoneKey)
	// Deleting or pruning nothing announces nothing.
	_, err = a.DeleteRecords(ctx, zone, []registry.RecordFilter{{Value: "z"}})
	must(err)
	_, err = a.PruneRecords(ctx, registry.ZoneChallenge, "TXT", now)
	must(err)
	expectQuiet(t, "zone writes that changed nothing", chB)

	expectQuiet(t, "the writer's own channel", chA)
	expectQuiet(t, "another schema", chOther)
}

// TestChangesLargeAnnouncement checks that a write touching more gateways
// than one notification can name is announced in full.
func TestChangesLargeAnnouncement(t *testing.T) {
	dsn, schema := tempSchema(t)
	a, b := openIn(t, dsn, schema), openIn(t, dsn, schema)
	ch, err := b.Changes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 400)
	for i := range names {
		names[i] = "gateway-with-a-rather-long-name-to-fill-the-payload-" + hex.EncodeToString([]byte{byte(i >> 8), byte(i)})
	}
	rows := make([][]any, len(names))
	for i, n := range names {
		rows[i] = []any{n, "tunnel", time.Now().Add(-time.Hour)}
	}
	if _, err := a.pool.CopyFrom(t.Context(), pgx.Identifier{"gateways"}, []string{"name", "mode", "created"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	expired, err := a.ExpireSilent(t.Context(), time.Now())
	if err != nil || len(expired) != len(names) {
		t.Fatalf("ExpireSilent = %d names, %v", len(expired), err)
	}
	expectNames(t, "ExpireSilent of many", ch, names...)
}

// TestChangesReconnect kills the listening session and checks that the
// listener comes back and delivers again.
func TestChangesReconnect(t *testing.T) {
	dsn, schema := tempSchema(t)
	a, b := openIn(t, dsn, schema), openIn(t, dsn, schema)
	ctx := t.Context()
	ch, err := b.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	app := b.listenConfig.RuntimeParams["application_name"]
	backend := func() (pid int32) {
		err := a.pool.QueryRow(ctx, `SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&pid)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	old := backend()
	if old == 0 {
		t.Fatal("no listening session found")
	}
	if _, err := a.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, old); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for pid := backend(); pid == 0 || pid == old; pid = backend() {
		if time.Now().After(deadline) {
			t.Fatal("the listener did not reconnect")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The new session may be connected but not yet listening; keep
	// writing until an announcement arrives.
	g := &registry.Gateway{Name: "after", TokenHash: registry.HashToken("after"), Mode: registry.ModeTunnel}
	if err := a.CreateGateway(ctx, g, ""); err != nil {
		t.Fatal(err)
	}
	resynced := false
	for {
		select {
		case name := <-ch:
			if name == registry.ResyncAll && !resynced {
				// Notes sent while disconnected are lost: the reader
				// must be told to reload everything, once, first.
				resynced = true
				continue
			}
			if key(name) != "after" || !resynced {
				t.Fatalf("got %q (resync seen: %v)", key(name), resynced)
			}
			return
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no announcement after reconnecting")
			}
			if _, err := a.UpdateGateway(ctx, "after", func(*registry.Gateway) (*string, error) { return nil, nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestChangesEnd checks that the channel closes when its context ends and
// when the store closes.
func TestChangesEnd(t *testing.T) {
	dsn, schema := tempSchema(t)
	s, err := Open(t.Context(), dsn, WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	byCtx, err := s.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byClose, err := s.Changes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	waitClosed(t, "after cancel", byCtx)
	s.Close()
	waitClosed(t, "after Close", byClose)
	if _, err := s.Changes(t.Context()); err == nil {
		t.Error("Changes on a closed store succeeded")
	}
}

func waitClosed(t *testing.T, what string, ch <-chan registry.Subtree) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if ok {
			t.Errorf("%s: got a name, want the channel closed", what)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s: channel still open", what)
	}
}

func TestChannelName(t *testing.T) {
	if c := channelName("public"); c != "gatehouse:public" {
		t.Errorf("channelName(public) = %q", c)
	}
	long := channelName(string(make([]byte, 63)))
	if len(long) > 63 {
		t.Errorf("channel name of %d bytes", len(long))
	}
}
