package node

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/dnszone"
	"github.com/gatehouse-project/gatehouse/modules/forward"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/pgstore"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const zone = "box.test"

func dnsConfig() *dnszone.Config {
	return &dnszone.Config{
		Nameservers: []dnszone.Nameserver{{Name: "ns1." + zone, Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}},
		TunnelAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.10")},
	}
}

// newNode builds and starts a node over store, stopped at the end of t.
func newNode(t *testing.T, store registry.Store, shared *Shared, rules forward.Rules) *Node {
	t.Helper()
	n, err := New(store, Config{Zone: zone, DNS: dnsConfig(), Forward: rules}, shared.Acquire(zone, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		_ = n.Stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop() })
	return n
}

func subscribe(t *testing.T, r *registry.Registry, name string) *registry.Subscription {
	t.Helper()
	sub, err := r.Subscribe(t.Context(), registry.SubscribeRequest{Name: name, Mode: registry.ModeTunnel})
	if err != nil {
		t.Fatalf("subscribe %s: %v", name, err)
	}
	return sub
}

// The initial load puts what the store already holds in the index, and
// the registry's events keep it in step afterwards.
func TestLoadAndApply(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		store := teststore.Open(t, driver)
		// Written before the node exists, as by an earlier run.
		subscribe(t, registry.New(store, registry.Config{}, nil), "before")
		n := newNode(t, store, &Shared{}, nil)
		if !n.Index().Has("before") || n.Index().Len() != 1 {
			t.Fatalf("loaded index: %v", n.Index().Names())
		}
		if _, err := n.Registry().Subscribe(t.Context(), registry.SubscribeRequest{Name: "ns1"}); !errors.Is(err, registry.ErrReservedName) {
			t.Fatalf("the zone's own nameserver name was registrable: %v", err)
		}
		sub := subscribe(t, n.Registry(), "after")
		if !n.Index().Has("after") {
			t.Fatal("a registration did not reach the index")
		}
		if _, err := n.Registry().Ping(t.Context(), sub.Token, netip.MustParseAddr("198.51.100.7"), nil); err != nil {
			t.Fatal(err)
		}
		if err := store.DeleteGateway(t.Context(), "before"); err != nil {
			t.Fatal(err)
		}
		if err := n.Registry().Reload(t.Context(), registry.GatewaySubtree("before")); err != nil {
			t.Fatal(err)
		}
		if n.Index().Has("before") {
			t.Fatal("a deleted gateway is still in the index")
		}
	})
}

// challengeTXT is what the node's DNS answers for the zone's own ACME
// challenge name.
func challengeTXT(t *testing.T, n *Node) []string {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(registry.ZoneChallenge+"."+zone+".", dns.TypeTXT)
	resp := n.DNSHandler().Answer(req, netip.MustParseAddr("127.0.0.1"), "udp")
	var got []string
	for _, rr := range resp.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			got = append(got, strings.Join(txt.Txt, ""))
		}
	}
	return got
}

// The zone's own records (the operator's challenge) are loaded at start
// and follow the registry's writes, through the same records path as a
// gateway's.
func TestZoneRecords(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		store := teststore.Open(t, driver)
		before := []registry.Record{{Owner: registry.ZoneChallenge, Type: "TXT", Value: "before"}}
		if _, err := registry.New(store, registry.Config{}, nil).SetRecords(t.Context(), registry.ZoneSubtree(), before); err != nil {
			t.Fatal(err)
		}
		n := newNode(t, store, &Shared{}, nil)
		if got := challengeTXT(t, n); len(got) != 1 || got[0] != "before" {
			t.Fatalf("loaded challenge: %q, want [before]", got)
		}
		after := []registry.Record{{Owner: registry.ZoneChallenge, Type: "TXT", Value: "after"}}
		if _, err := n.Registry().SetRecords(t.Context(), registry.ZoneSubtree(), after); err != nil {
			t.Fatal(err)
		}
		if got := challengeTXT(t, n); len(got) != 1 || got[0] != "after" {
			t.Fatalf("challenge after a write: %q, want [after]", got)
		}
	})
}

// Another node's writes arrive through PostgreSQL notifications; when the
// listening connection is killed, what changed meanwhile arrives through
// the resync, deletions included.
func TestFollowAndResyncPostgres(t *testing.T) {
	dsn, schema := teststore.Postgres(t)
	open := func() registry.Store {
		s, err := pgstore.Open(t.Context(), dsn, pgstore.WithSchema(schema))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	writerStore := open()
	writer := registry.New(writerStore, registry.Config{}, nil)
	n := newNode(t, open(), &Shared{}, nil)

	subscribe(t, writer, "one")
	testtools.Eventually(t, 15*time.Second, "the other node's registration", func() bool { return n.Index().Has("one") })
	challenge := []registry.Record{{Owner: registry.ZoneChallenge, Type: "TXT", Value: "other node"}}
	if _, err := writer.SetRecords(t.Context(), registry.ZoneSubtree(), challenge); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 15*time.Second, "the other node's zone record", func() bool {
		got := challengeTXT(t, n)
		return len(got) == 1 && got[0] == "other node"
	})

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Only this test's node listens on its schema's channel.
	listener := func() (pid int32) {
		err := conn.QueryRow(t.Context(), `SELECT coalesce(max(pid), 0) FROM pg_stat_activity
			WHERE application_name LIKE 'gatehouse-changes-%' AND query LIKE '%' || $1 || '%'`, schema).Scan(&pid)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	old := listener()
	if old == 0 {
		t.Fatal("no LISTEN session found")
	}
	if _, err := conn.Exec(t.Context(), `SELECT pg_terminate_backend($1)`, old); err != nil {
		t.Fatal(err)
	}
	// Changes made while the node is (most likely) not listening.
	subscribe(t, writer, "two")
	if err := writerStore.DeleteGateway(t.Context(), "one"); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 15*time.Second, "the resync", func() bool {
		return n.Resyncs() >= 1 && n.Index().Has("two") && !n.Index().Has("one")
	})
	if pid := listener(); pid == old {
		t.Fatal("still the killed LISTEN session")
	}
	// And notifications flow again.
	subscribe(t, writer, "three")
	testtools.Eventually(t, 15*time.Second, "a registration after the reconnect", func() bool { return n.Index().Has("three") })
}

// A reload: the new node takes the hub the old one holds, so releasing the
// old node keeps the tunnels, and the agents' streams go to the new node's
// relay from then on. The last holder's release closes the tunnels.
func TestReloadKeepsTunnels(t *testing.T) {
	store := teststore.Open(t, "sqlite")
	shared := &Shared{}
	first := newNode(t, store, shared, nil) // no forwarding rules
	sub := subscribe(t, first.Registry(), "home")

	var current atomic.Pointer[Node]
	current.Store(first)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := current.Load()
		n.Hub().ServeTunnel(w, r, n.AuthenticateTunnel, tunnel.Config{})
	}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	agentDone := make(chan struct{})
	defer func() { cancel(); <-agentDone }()
	agent := &client.Client{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Name: "home", Token: sub.Token,
		Handler: func(st *tunnel.Stream) {
			_ = st.Ack(true, "")
			_, _ = io.Copy(st, st)
			_ = st.CloseWrite()
		}}
	go func() { defer close(agentDone); _ = agent.Run(ctx) }()
	// Both ends: the hub registers the session before the agent has read
	// the handshake's answer.
	testtools.Eventually(t, 15*time.Second, "the tunnel", func() bool { _, ok := first.Hub().Lookup("home"); return ok && agent.State().Connected })
	before, _ := first.Hub().Lookup("home")

	toSelf := tunnel.Initiator{Gatename: "home", Ip: "127.0.0.1", Port: 7}
	if _, err := agent.Open(t.Context(), toSelf); err == nil || !strings.Contains(err.Error(), forward.ReasonDenied) {
		t.Fatalf("forward under the first config: %v, want %q", err, forward.ReasonDenied)
	}

	second := newNode(t, store, shared, forward.Rules{{From: "home", To: "home"}})
	current.Store(second)
	if second.Hub() != first.Hub() {
		t.Fatal("the new node has a hub of its own: a reload would drop every tunnel")
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	after, ok := second.Hub().Lookup("home")
	if !ok || after != before || after.Err() != nil {
		t.Fatal("the tunnel did not survive the old node's release")
	}
	echo(t, after)
	// The agent's own streams now follow the new node's rules.
	st, err := agent.Open(t.Context(), toSelf)
	if err != nil {
		t.Fatalf("forward under the second config: %v", err)
	}
	_, _ = st.Write([]byte("ping"))
	_ = st.CloseWrite()
	if got, err := io.ReadAll(st); err != nil || string(got) != "ping" {
		t.Fatalf("forwarded echo %q %v", got, err)
	}
	_ = st.Close()

	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-after.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the last release did not close the tunnel")
	}
	// A new holder gets a new hub.
	l := shared.Acquire(zone, nil)
	defer l.Release()
	if l.Hub() == second.Hub() {
		t.Fatal("a closed hub was handed out again")
	}
}

// echo checks that a stream down tn comes back echoed.
func echo(t *testing.T, tn hub.Tunnel) {
	t.Helper()
	st, err := tn.Open(t.Context(), tunnel.Meta{Gateway: "home", Client: netip.MustParseAddrPort("192.0.2.1:1234")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, _ = st.Write([]byte("hello"))
	_ = st.CloseWrite()
	if got, err := io.ReadAll(st); err != nil || string(got) != "hello" {
		t.Fatalf("echo through the tunnel: %q %v", got, err)
	}
}

// A gateway created by acme-dns's /register with allowfrom: its token opens
// a tunnel only from those networks, as the API's endpoints take it only
// from there; a handshake whose client address is unknown is not refused.
func TestTunnelHonoursAllowFrom(t *testing.T) {
	n := newNode(t, teststore.Open(t, "sqlite"), &Shared{}, nil)
	ctx := t.Context()
	sub, err := n.Registry().RegisterACMEDNS(ctx, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	var refused *tunnel.RefusedError
	outside := registry.WithClientIP(ctx, netip.MustParseAddr("198.51.100.1"))
	if err := n.AuthenticateTunnel(outside, sub.Name, sub.Token); !errors.As(err, &refused) || !strings.Contains(refused.Reason, "allowfrom") {
		t.Fatalf("from outside allowfrom: %v", err)
	}
	inside := registry.WithClientIP(ctx, netip.MustParseAddr("192.0.2.9"))
	if err := n.AuthenticateTunnel(inside, sub.Name, sub.Token); err != nil {
		t.Fatalf("from inside allowfrom: %v", err)
	}
	if err := n.AuthenticateTunnel(ctx, sub.Name, sub.Token); err != nil {
		t.Fatalf("without a client address: %v", err)
	}
}
