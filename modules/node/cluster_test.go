package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/cluster/link"
	"github.com/gatehouse-project/gatehouse/modules/forward"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/pgstore"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// testCluster is several nodes in this process on one PostgreSQL schema,
// each with its own hub, store, link listener and agent endpoint.
type testCluster struct {
	t           *testing.T
	dsn, schema string
	ca          *testcert.Cert
}

type clusterNode struct {
	*Node
	url  string // the agents' tunnel endpoint, ws://
	addr netip.Addr
}

func newTestCluster(t *testing.T) *testCluster {
	dsn, schema := teststore.Postgres(t)
	return &testCluster{t: t, dsn: dsn, schema: schema,
		ca: testcert.MustCA(t, testcert.Options{DNSNames: []string{"cluster ca"}})}
}

// clusterConfig describes node name with public address addr, a fresh
// link listener and a certificate of the test CA.
func (tc *testCluster) clusterConfig(name, addr string) *ClusterConfig {
	t := tc.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	cert := tc.ca.MustIssue(t, testcert.Options{DNSNames: []string{name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	cc := &ClusterConfig{Listen: func() (net.Listener, error) { return ln, nil }}
	cc.Name, cc.PublicAddrs, cc.LinkAddr = name, []netip.Addr{netip.MustParseAddr(addr)}, ln.Addr().String()
	// Long enough for a loaded machine running -race: a missed renewal
	// would take the node out of the others' view (and their link).
	cc.Cert, cc.CA, cc.Lease = cert.TLS(), tc.ca.Pool(), 5*time.Second
	cc.DSN, cc.Schema = tc.dsn, tc.schema
	return cc
}

// store opens the registry in the cluster's schema.
func (tc *testCluster) store() registry.Store {
	t := tc.t
	t.Helper()
	store, err := pgstore.Open(t.Context(), tc.dsn, pgstore.WithSchema(tc.schema))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// node starts a cluster node called name, public address addr, with the
// forwarding rules given; it is stopped when the test ends.
func (tc *testCluster) node(name, addr string, rules forward.Rules) *clusterNode {
	t := tc.t
	t.Helper()
	return tc.start(tc.store(), &Shared{}, tc.clusterConfig(name, addr), rules)
}

// start builds and starts a node over store, with the hub of shared and
// the cluster config cc, and serves its agents' endpoint.
func (tc *testCluster) start(store registry.Store, shared *Shared, cc *ClusterConfig, rules forward.Rules) *clusterNode {
	t := tc.t
	t.Helper()
	n, err := New(store, Config{Zone: zone, DNS: dnsConfig(), Forward: rules, Cluster: cc}, shared.Acquire(zone, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		_ = n.Stop()
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Hub().ServeTunnel(w, r, n.AuthenticateTunnel, tunnel.Config{})
	}))
	// Stop before the server: ServeTunnel returns once the hub closes.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { _ = n.Stop() })
	return &clusterNode{Node: n, url: "ws" + strings.TrimPrefix(srv.URL, "http"), addr: cc.PublicAddrs[0]}
}

// agent runs an echoing agent for name on n until stop is called.
func agentOn(t *testing.T, n *clusterNode, name, token string) (a *client.Client, stop func()) {
	t.Helper()
	a = &client.Client{URL: n.url, Name: name, Token: token, Handler: func(st *tunnel.Stream) {
		_ = st.Ack(true, "")
		_, _ = io.Copy(st, st)
		_ = st.CloseWrite()
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	testtools.Eventually(t, 15*time.Second, name+"'s tunnel on "+n.Cluster().Name(), func() bool {
		_, ok := n.Hub().Lookup(name)
		return ok && a.State().Connected
	})
	return a, stop
}

func echoName(t *testing.T, tn hub.Tunnel, name string) {
	t.Helper()
	st, err := tn.Open(t.Context(), tunnel.Meta{Gateway: name, ServerName: name + "." + zone, Client: netip.MustParseAddrPort("192.0.2.1:1234")})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer st.Close()
	_, _ = st.Write([]byte("hello " + name))
	_ = st.CloseWrite()
	if got, err := io.ReadAll(st); err != nil || string(got) != "hello "+name {
		t.Fatalf("echo through %s: %q %v", tn.Kind(), got, err)
	}
}

// dnsA asks n's DNS handler for name's A records.
func dnsA(t *testing.T, n *clusterNode, name string, qtype uint16) []string {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	resp := n.DNSHandler().Answer(req, netip.MustParseAddr("127.0.0.1"), "udp")
	var got []string
	for _, rr := range append(resp.Answer, resp.Extra...) {
		switch rr := rr.(type) {
		case *dns.A:
			got = append(got, rr.Hdr.Name+" "+rr.A.String())
		case *dns.NS:
			got = append(got, rr.Ns)
		}
	}
	slices.Sort(got)
	return got
}

func holderNames(n *clusterNode, gateway string) string {
	var names []string
	for _, h := range n.Cluster().Member().Holders(gateway) {
		names = append(names, h.Name)
	}
	return strings.Join(names, ",")
}

// Three nodes on one database: a gateway whose tunnel one node holds is
// reached through every node (relayed by the others), forwarding works
// between agents on different nodes, DNS steering follows the holders, a
// replaced tunnel keeps its directory entry, and the gateway is offline
// on every node only once no node holds it.
func TestClusterReachesEveryGateway(t *testing.T) {
	tc := newTestCluster(t)
	a := tc.node("node-a", "192.0.2.1", nil)
	b := tc.node("node-b", "192.0.2.2", forward.Rules{{From: "office", To: "home"}})
	c := tc.node("node-c", "192.0.2.3", nil)
	nodes := []*clusterNode{a, b, c}
	testtools.Eventually(t, 10*time.Second, "three members", func() bool {
		for _, n := range nodes {
			if len(n.Cluster().Nodes()) != 3 {
				return false
			}
		}
		return true
	})
	home := subscribe(t, a.Registry(), "home")
	office := subscribe(t, a.Registry(), "office")

	if _, ok := c.Tunnels().Lookup("home"); ok {
		t.Fatal("an offline gateway is found")
	}
	if got := c.Cluster().TunnelAddrs("home"); len(got) != 3 {
		t.Fatalf("steering for a gateway nobody holds: %v, want every node", got)
	}
	version := c.Cluster().Version()

	_, stopHome := agentOn(t, a, "home", home.Token)
	officeAgent, _ := agentOn(t, b, "office", office.Token)
	for _, n := range nodes {
		testtools.Eventually(t, 10*time.Second, "home held by node-a, seen from "+n.Cluster().Name(), func() bool {
			return holderNames(n, "home") == "node-a"
		})
		tn, ok := n.Tunnels().Lookup("home")
		if !ok {
			t.Fatalf("%s does not find home", n.Cluster().Name())
		}
		if want := map[bool]string{true: hub.KindWebSocket, false: link.KindRelay}[n == a]; tn.Kind() != want {
			t.Fatalf("%s reaches home through %q, want %q", n.Cluster().Name(), tn.Kind(), want)
		}
		echoName(t, tn, "home")
		if got := n.Cluster().TunnelAddrs("home"); !slices.Equal(got, []netip.Addr{a.addr}) {
			t.Fatalf("%s steers home to %v, want node-a's %v", n.Cluster().Name(), got, a.addr)
		}
		// DNS on every node: home's name points at its holder, NS and
		// glue list the live nodes.
		if got := dnsA(t, n, "home."+zone+".", dns.TypeA); !slices.Equal(got, []string{"home." + zone + ". 192.0.2.1"}) {
			t.Fatalf("%s answers home A %v, want node-a's address", n.Cluster().Name(), got)
		}
		want := []string{"node-a." + zone + ". 192.0.2.1", "node-b." + zone + ". 192.0.2.2", "node-c." + zone + ". 192.0.2.3",
			"node-a." + zone + ".", "node-b." + zone + ".", "node-c." + zone + "."}
		slices.Sort(want)
		if got := dnsA(t, n, zone+".", dns.TypeNS); !slices.Equal(got, want) {
			t.Fatalf("%s answers NS %v, want %v", n.Cluster().Name(), got, want)
		}
	}
	if c.Cluster().Version() == version {
		t.Fatal("the steering version did not move with the directory")
	}
	if ns := c.Cluster().NameServers(); len(ns) != 3 || ns[0].Name != "node-a."+zone || ns[2].Addrs[0] != c.addr {
		t.Fatalf("name servers %+v", ns)
	}
	if st := c.Cluster().Link().Stats(); st.StreamsOut == 0 {
		t.Fatalf("node-c's link stats %+v: no relayed stream counted", st)
	}

	// office (on node-b) forwards to home (on node-a).
	st, err := officeAgent.Open(t.Context(), tunnel.Initiator{Gatename: "home", Ip: "127.0.0.1", Port: 7})
	if err != nil {
		t.Fatalf("forward across nodes: %v", err)
	}
	_, _ = st.Write([]byte("ping"))
	_ = st.CloseWrite()
	if got, err := io.ReadAll(st); err != nil || string(got) != "ping" {
		t.Fatalf("forwarded echo %q %v", got, err)
	}
	_ = st.Close()

	// A second tunnel of home on node-a replaces the first: no Release.
	// One more on node-b makes two holders; when node-a's goes, node-c
	// still reaches home through node-b.
	_, stopHome2 := agentOn(t, a, "home", home.Token)
	stopHome()
	_, stopHomeB := agentOn(t, b, "home", home.Token)
	testtools.Eventually(t, 10*time.Second, "two holders seen from node-c", func() bool { return holderNames(c, "home") == "node-a,node-b" })
	both, ok := c.Tunnels().Lookup("home")
	if !ok {
		t.Fatal("node-c does not find home held twice")
	}
	// The operator's view on node-c, from memory: who holds what.
	if got := c.Cluster().Holders("HOME"); !slices.Equal(got, []string{"node-a", "node-b"}) {
		t.Fatalf("node-c: Holders(home) = %v", got)
	}
	if got, want := c.Cluster().Directory(), map[string][]string{"home": {"node-a", "node-b"}, "office": {"node-b"}}; !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("node-c: Directory() = %v, want %v", got, want)
	}
	if got, want := c.Cluster().HeldCounts(), map[string]int{"node-a": 1, "node-b": 2, "node-c": 0}; !maps.Equal(got, want) {
		t.Fatalf("node-c: HeldCounts() = %v, want %v", got, want)
	}
	stopHome2()
	testtools.Eventually(t, 10*time.Second, "home gone from node-a's hub", func() bool { _, ok := a.Hub().Lookup("home"); return !ok })
	// Looked up while node-a held it: node-a now refuses (not held
	// here), and the stream goes through the next holder.
	echoName(t, both, "home")
	testtools.Eventually(t, 10*time.Second, "node-a's release", func() bool { return holderNames(c, "home") == "node-b" })
	tn, ok := c.Tunnels().Lookup("home")
	if !ok {
		t.Fatal("node-c lost home while node-b holds it")
	}
	echoName(t, tn, "home")

	stopHomeB()
	for _, n := range nodes {
		testtools.Eventually(t, 10*time.Second, "home offline on "+n.Cluster().Name(), func() bool {
			_, ok := n.Tunnels().Lookup("home")
			return !ok
		})
	}
	testtools.Eventually(t, 5*time.Second, "home steered to every node once none holds it", func() bool {
		return len(dnsA(t, c, "home."+zone+".", dns.TypeA)) == 3
	})
	if _, ok := c.Tunnels().Lookup("office"); !ok {
		t.Fatal("office, still held by node-b, is not found from node-c")
	}
}

// When the holding node leaves the cluster, the others' relays to it end
// at once and the gateway is offline there; a tunnel looked up before
// says it is no longer live. (A node killed without leaving drops out at
// its lease's end the same way: modules/cluster tests the lease, and the
// e2e test kills a node.)
func TestClusterNodeDeath(t *testing.T) {
	tc := newTestCluster(t)
	a := tc.node("node-a", "192.0.2.1", nil)
	b := tc.node("node-b", "192.0.2.2", nil)
	sub := subscribe(t, a.Registry(), "home")
	agentOn(t, a, "home", sub.Token)
	var tn hub.Tunnel
	testtools.Eventually(t, 10*time.Second, "home through node-b", func() bool {
		var ok bool
		tn, ok = b.Tunnels().Lookup("home")
		return ok
	})
	echoName(t, tn, "home")
	relay := b.Cluster().Link().Relay("node-a")

	// Stop node-a's cluster part only: its agent stays connected to it.
	if err := a.Cluster().Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-relay.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("node-b keeps its relay to a node that left")
	}
	testtools.Eventually(t, 5*time.Second, "home offline on node-b", func() bool {
		_, ok := b.Tunnels().Lookup("home")
		return !ok
	})
	if tn.Err() == nil {
		t.Fatal("the relayed tunnel looked up before still says it is live")
	}
	if got := b.Cluster().TunnelAddrs("home"); !slices.Equal(got, []netip.Addr{b.addr}) {
		t.Fatalf("steering after node-a left: %v, want node-b's only", got)
	}
}

// A reload keeps the cluster with the hub: the new node takes the running
// membership and link over (its listener is not opened again), the old
// node's stop leaves the cluster untouched, and the gateway stays held. A
// reload that renames the node is refused. The last release leaves.
func TestClusterSurvivesReload(t *testing.T) {
	tc := newTestCluster(t)
	other := tc.node("node-b", "192.0.2.2", nil)
	store, shared := tc.store(), &Shared{}
	cc := tc.clusterConfig("node-a", "192.0.2.1")
	first := tc.start(store, shared, cc, nil)
	sub := subscribe(t, first.Registry(), "home")
	agentOn(t, first, "home", sub.Token)
	testtools.Eventually(t, 10*time.Second, "home held by node-a", func() bool { return holderNames(other, "home") == "node-a" })

	// node-b's link session to node-a opens with node-a's first
	// certificate; the reload brings another.
	if tn, ok := other.Tunnels().Lookup("home"); !ok {
		t.Fatal("node-b does not find home")
	} else {
		echoName(t, tn, "home")
	}
	again := *cc
	renewed := tc.ca.MustIssue(t, testcert.Options{DNSNames: []string{"node-a"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	again.Cert = renewed.TLS()
	again.Listen = func() (net.Listener, error) {
		t.Error("a reload opened the link listener again")
		return nil, errors.New("listener in use")
	}
	second := tc.start(store, shared, &again, nil)
	if second.Cluster() != first.Cluster() {
		t.Fatal("the reload joined a cluster of its own")
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	// Still held, and still reached from the other node, after the old
	// configuration's stop.
	time.Sleep(300 * time.Millisecond)
	if got := holderNames(other, "home"); got != "node-a" {
		t.Fatalf("holders after the reload %q", got)
	}
	tn, ok := other.Tunnels().Lookup("home")
	if !ok {
		t.Fatal("node-b lost home over node-a's reload")
	}
	echoName(t, tn, "home")
	// New link sessions present the reloaded certificate.
	client := tc.ca.MustIssue(t, testcert.Options{DNSNames: []string{"node-b"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	conn, err := tls.Dial("tcp", cc.LinkAddr, &tls.Config{Certificates: []tls.Certificate{client.TLS()},
		RootCAs: tc.ca.Pool(), ServerName: "node-a", MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("TLS to node-a's link after the reload: %v", err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(renewed.Leaf.SerialNumber) != 0 {
		t.Fatalf("node-a's link presents %v after the reload, want the new certificate %v", got, renewed.Leaf.SerialNumber)
	}
	_ = conn.Close()
	if s := other.Cluster().Link().Stats().Sessions; s != 1 {
		t.Fatalf("node-b has %d link sessions, want the one opened before the reload", s)
	}

	renamed := *cc
	renamed.Name = "node-z"
	// New does not join; Start does, and refuses the rename.
	n, err := New(store, Config{Zone: zone, Cluster: &renamed}, shared.Acquire(zone, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("a renaming reload started: %v", err)
	}
	_ = n.Stop()

	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "node-a gone from node-b's view", func() bool {
		return len(other.Cluster().Nodes()) == 1 && holderNames(other, "home") == ""
	})
}
