package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	t           *testing.T
	dsn, schema string
	lease       time.Duration
}

func newFixture(t *testing.T, lease time.Duration) *fixture {
	dsn, schema := teststore.Postgres(t)
	return &fixture{t: t, dsn: dsn, schema: schema, lease: lease}
}

// join starts a member named name, left when the test ends.
func (f *fixture) join(name string, addr string) *Member {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := Join(ctx, f.dsn, Self{
		Name:        name,
		PublicAddrs: []netip.Addr{netip.MustParseAddr(addr)},
		LinkAddr:    addr + ":7443",
	}, Options{Lease: f.lease, Schema: f.schema})
	if err != nil {
		f.t.Fatalf("join %s: %v", name, err)
	}
	f.t.Cleanup(func() { _ = m.Close() })
	return m
}

// conn is a plain connection into the fixture's schema.
func (f *fixture) conn() *pgx.Conn {
	f.t.Helper()
	cfg, err := pgx.ParseConfig(f.dsn)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = pgx.Identifier{f.schema}.Sanitize()
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { closeConn(c) })
	return c
}

func names(ns []Node) []string {
	out := []string{}
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}

// within polls cond until it holds, failing after d; it returns how long
// it took.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func TestMembershipDirectoryAndDeath(t *testing.T) {
	const lease = 1500 * time.Millisecond
	f := newFixture(t, lease)
	a := f.join("node-a", "127.0.0.1")
	b := f.join("node-b", "127.0.0.2")
	c := f.join("node-c", "127.0.0.3")
	all := []string{"node-a", "node-b", "node-c"}
	for _, m := range []*Member{a, b, c} {
		within(t, time.Second, m.self.Name+" sees every node", func() bool { return slices.Equal(names(m.Nodes()), all) })
	}
	if n, ok := a.Node("NODE-B"); !ok || n.LinkAddr != "127.0.0.2:7443" || !slices.Equal(n.PublicAddrs, []netip.Addr{netip.MustParseAddr("127.0.0.2")}) {
		t.Fatalf("a.Node(node-b) = %+v, %v", n, ok)
	}

	// Directory changes reach every member within a second.
	sub, unsubscribe := a.Subscribe()
	defer unsubscribe()
	start := time.Now()
	b.Hold("GW1")
	c.Hold("gw1")
	c.Hold("gw3")
	for _, m := range []*Member{a, b, c} {
		within(t, time.Second, m.self.Name+" sees gw1 on b and c", func() bool {
			return slices.Equal(names(m.Holders("gw1")), []string{"node-b", "node-c"})
		})
	}
	t.Logf("directory propagation to three members: %v", time.Since(start))
	select {
	case <-sub:
	default:
		t.Error("the subscriber was not told of the directory change")
	}
	b.Release("gw1")
	within(t, time.Second, "a sees gw1 released by b", func() bool {
		return slices.Equal(names(a.Holders("gw1")), []string{"node-c"})
	})
	if got := a.Holders("nobody"); len(got) != 0 {
		t.Errorf("Holders(nobody) = %v", names(got))
	}
	// The operator's view, from the same memory.
	if got, want := a.Directory(), map[string][]string{"gw1": {"node-c"}, "gw3": {"node-c"}}; !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("Directory() = %v, want %v", got, want)
	}
	if got, want := a.HeldCounts(), map[string]int{"node-a": 0, "node-b": 0, "node-c": 2}; !maps.Equal(got, want) {
		t.Errorf("HeldCounts() = %v, want %v", got, want)
	}

	// c dies: its goroutines stop, its row stays. Within lease+1s it is
	// out of the others' views, directory included, with no NOTIFY.
	c.halt()
	killed := time.Now()
	for _, m := range []*Member{a, b} {
		within(t, lease+time.Second, m.self.Name+" drops node-c", func() bool {
			return slices.Equal(names(m.Nodes()), []string{"node-a", "node-b"}) && len(m.Holders("gw3")) == 0 && len(m.Holders("gw1")) == 0
		})
	}
	t.Logf("dead node out of the views after %v (lease %v)", time.Since(killed), lease)
	if got, want := a.HeldCounts(), map[string]int{"node-a": 0, "node-b": 0}; !maps.Equal(got, want) || len(a.Directory()) != 0 {
		t.Errorf("after node-c's death: HeldCounts() = %v, Directory() = %v", got, a.Directory())
	}
	// Its row and entries are reaped from the database too.
	db := f.conn()
	within(t, lease+2*time.Second, "node-c's row reaped", func() bool {
		var n int
		if err := db.QueryRow(context.Background(), `SELECT count(*) FROM cluster_nodes WHERE name = 'node-c'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	var entries int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM cluster_tunnels WHERE node = 'node-c'`).Scan(&entries); err != nil {
		t.Fatal(err)
	}
	if entries != 0 {
		t.Errorf("%d directory entries of the reaped node remain", entries)
	}

	// A restarted c rejoins under its name, with an empty share.
	c2 := f.join("node-c", "127.0.0.3")
	within(t, time.Second, "a sees node-c back", func() bool { return slices.Equal(names(a.Nodes()), all) })
	c2.Hold("gw3")
	within(t, time.Second, "b sees gw3 on the new node-c", func() bool {
		return slices.Equal(names(b.Holders("gw3")), []string{"node-c"})
	})

	// A clean Close is heard at once, not after the lease.
	closed := time.Now()
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "a drops the closed node-c", func() bool {
		return slices.Equal(names(a.Nodes()), []string{"node-a", "node-b"}) && len(a.Holders("gw3")) == 0
	})
	t.Logf("closed node out after %v", time.Since(closed))
}

// TestRestartTakesOver checks that a node restarted while its old row's
// lease still runs replaces it: the old incarnation's entries are gone.
func TestRestartTakesOver(t *testing.T) {
	f := newFixture(t, 3*time.Second)
	a := f.join("node-a", "127.0.0.1")
	b := f.join("node-b", "127.0.0.2")
	b.Hold("gw")
	within(t, time.Second, "a sees gw on b", func() bool { return len(a.Holders("gw")) == 1 })
	b.halt()
	b2 := f.join("node-b", "127.0.0.2")
	within(t, time.Second, "a forgets the old incarnation's gw", func() bool { return len(a.Holders("gw")) == 0 })
	if !slices.Equal(names(a.Nodes()), []string{"node-a", "node-b"}) {
		t.Errorf("a sees %v", names(a.Nodes()))
	}
	// The old incarnation, were it still running, no longer renews the
	// row: its heartbeat finds another incarnation.
	b.ctx, b.stop = context.WithCancel(context.Background())
	defer b.stop()
	if err := b.beat(); !errors.Is(err, errTakenOver) {
		t.Errorf("old incarnation's heartbeat: %v, want errTakenOver", err)
	}
	_ = b2
}

// TestBatching checks that many Holds at once are written in a few
// transactions and seen everywhere within a second.
func TestBatching(t *testing.T) {
	f := newFixture(t, 3*time.Second)
	a := f.join("node-a", "127.0.0.1")
	b := f.join("node-b", "127.0.0.2")
	db := f.conn()
	var before int64
	if err := db.QueryRow(context.Background(), `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	start := time.Now()
	for i := range n {
		a.Hold(fmt.Sprintf("gw%04d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "b sees all gateways", func() bool {
		return len(b.Holders("gw0000")) == 1 && len(b.Holders(fmt.Sprintf("gw%04d", n-1))) == 1
	})
	t.Logf("%d holds written and propagated in %v", n, time.Since(start))
	for i := range n {
		if len(b.Holders(fmt.Sprintf("gw%04d", i))) != 1 {
			t.Fatalf("b misses gw%04d", i)
		}
	}
	var count int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM cluster_tunnels WHERE node = 'node-a'`).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != n {
		t.Errorf("%d rows, want %d", count, n)
	}
	// pg_stat counters are approximate and database-wide (other tests
	// may run): the bound only catches one transaction per Hold.
	var after int64
	_, _ = db.Exec(context.Background(), `SELECT pg_stat_clear_snapshot()`)
	if err := db.QueryRow(context.Background(), `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after-before > n/4 {
		t.Errorf("%d commits for %d holds: not batched", after-before, n)
	}
	if got := a.Held(); len(got) != n {
		t.Errorf("Held() has %d", len(got))
	}
	st := a.Stats()
	if st.Held != n || st.Nodes != 2 || st.Batches == 0 || st.Batches > n/4 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d holds in %d transactions", n, st.Batches)
}

// TestResyncAfterLostListener kills a member's listening connection on the
// server and checks that what changed meanwhile reaches it.
func TestResyncAfterLostListener(t *testing.T) {
	f := newFixture(t, 3*time.Second)
	name := "node-r" + f.schema[len(f.schema)-6:]
	a := f.join(name, "127.0.0.1")
	b := f.join("node-b", "127.0.0.2")
	b.Hold("before")
	within(t, time.Second, "a sees before", func() bool { return len(a.Holders("before")) == 1 })

	db := f.conn()
	var killed int
	if err := db.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`,
		"gatehouse-cluster-"+name).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d listener connections, want 1", killed)
	}
	// Changes made while a has no listener are not replayed to it; the
	// reload after reconnecting brings them.
	b.Hold("during")
	b.Release("before")
	c := f.join("node-c", "127.0.0.3")
	c.Hold("during")
	within(t, 2*time.Second, "a resynced", func() bool {
		return slices.Equal(names(a.Holders("during")), []string{"node-b", "node-c"}) && len(a.Holders("before")) == 0 &&
			len(a.Nodes()) == 3
	})
	if st := a.Stats(); st.Resyncs != 1 {
		t.Errorf("%d resyncs, want 1", st.Resyncs)
	}
	// And it keeps listening afterwards.
	c.Hold("after")
	within(t, time.Second, "a hears changes after the resync", func() bool { return len(a.Holders("after")) == 1 })
}

// TestForeignNotification checks that a payload no member sent, on the
// cluster's channel, is ignored.
func TestForeignNotification(t *testing.T) {
	f := newFixture(t, 3*time.Second)
	a := f.join("node-a", "127.0.0.1")
	b := f.join("node-b", "127.0.0.2")
	db := f.conn()
	for _, p := range []string{`not json`, `{"k":"leave","n":"bad name!"}`, `{"k":"explode","n":"node-b"}`, `{"k":"join","n":"x","ms":-1}`} {
		if _, err := db.Exec(context.Background(), `SELECT pg_notify($1, $2)`, channelName(f.schema), p); err != nil {
			t.Fatal(err)
		}
	}
	b.Hold("gw")
	within(t, time.Second, "a still works", func() bool { return len(a.Holders("gw")) == 1 })
	if len(a.Nodes()) != 2 {
		t.Errorf("a sees %v", names(a.Nodes()))
	}
}

func TestJoinRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	for _, s := range []Self{
		{Name: "", LinkAddr: "127.0.0.1:1"},
		{Name: "bad name", LinkAddr: "127.0.0.1:1"},
		{Name: "-x", LinkAddr: "127.0.0.1:1"},
		{Name: "ok", LinkAddr: "no-port"},
		{Name: "ok", LinkAddr: "127.0.0.1:1", PublicAddrs: []netip.Addr{{}}},
	} {
		if _, err := Join(ctx, "postgres://127.0.0.1:1/x", s, Options{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Join(%+v) = %v, want ErrInvalid", s, err)
		}
	}
	if _, err := Join(ctx, "postgres://127.0.0.1:1/x", Self{Name: "ok", LinkAddr: "h:1"}, Options{Lease: time.Millisecond}); !errors.Is(err, ErrInvalid) {
		t.Errorf("tiny lease: %v", err)
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add(`{"k":"join","n":"node-a","a":["127.0.0.1","::1"],"l":"127.0.0.1:7443","ms":6000}`)
	f.Add(`{"k":"leave","n":"node-a"}`)
	f.Add(`{"k":"dir","n":"node-a","h":["gw1","GW2"],"r":["gw3"]}`)
	f.Add(`{"k":"dir","n":"node-a","h":[""]}`)
	f.Fuzz(func(t *testing.T, payload string) {
		ev, err := parseEvent(payload)
		if err != nil {
			if !errors.Is(err, errBadEvent) {
				t.Fatalf("error %v does not wrap errBadEvent", err)
			}
			return
		}
		if !validName(ev.Node) {
			t.Fatalf("accepted node %q", ev.Node)
		}
		// Whatever is accepted applies without trouble.
		var v view
		v.init()
		v.apply(ev, time.Now())
		_ = v.nodes(time.Now())
	})
}
