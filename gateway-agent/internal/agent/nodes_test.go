package agent

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/config"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/localapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// testCloud is several cloud nodes on one port of different loopback
// addresses, each serving the real registration API over one registry
// and a real hub as its tunnel endpoint. "example.com" (the name in
// httptest's certificate) is the cloud's DNS name: it resolves to the
// first node, the one an agent reaches when it knows no nodes.
type testCloud struct {
	t     *testing.T
	reg   *registry.Registry
	port  int
	ca    string
	nodes map[string]*testNode

	mu      sync.Mutex
	listed  []regapi.Node
	listing atomic.Int64
}

// testNode is one node; kill ends it as a crash would: its listener and
// every connection close at once, without a word to the agents.
type testNode struct {
	name  string
	addr  netip.Addr
	hub   *hub.Hub
	srv   *httptest.Server
	mu    sync.Mutex
	conns []net.Conn
	// opened counts the streams agents opened toward this node.
	opened atomic.Int64
	killed sync.Once
}

// Nodes is the membership GET /v1/nodes lists.
func (c *testCloud) Nodes() []regapi.Node {
	c.listing.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listed
}

// list sets the membership to the named nodes.
func (c *testCloud) list(names ...string) {
	var nodes []regapi.Node
	for _, n := range names {
		nodes = append(nodes, regapi.Node{Name: n, Addrs: []netip.Addr{c.nodes[n].addr}})
	}
	c.mu.Lock()
	c.listed = nodes
	c.mu.Unlock()
}

// startTestCloud starts the nodes "dns" on 127.0.0.1 and node-N on
// 127.0.0.N for N in ids, all on one port.
func startTestCloud(t *testing.T, ids ...int) *testCloud {
	t.Helper()
	c := &testCloud{t: t, nodes: map[string]*testNode{}}
	c.reg = registry.New(teststore.Open(t, "sqlite"), registry.Config{SweepInterval: time.Hour}, noMail{})
	c.reg.Start()
	t.Cleanup(c.reg.Stop)
	addrs := map[string]netip.Addr{"dns": netip.MustParseAddr("127.0.0.1")}
	for _, id := range ids {
		addrs[fmt.Sprintf("node-%d", id)] = netip.AddrFrom4([4]byte{127, 0, 0, byte(id)})
	}
	// One port free on every address: the tunnel URL has one port.
	var lns map[string]net.Listener
	for try := 0; lns == nil && try < 20; try++ {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.port = first.Addr().(*net.TCPAddr).Port
		lns = map[string]net.Listener{"dns": first}
		for name, addr := range addrs {
			if name == "dns" {
				continue
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(c.port)))
			if err != nil {
				for _, l := range lns {
					l.Close()
				}
				lns = nil
				break
			}
			lns[name] = ln
		}
	}
	if lns == nil {
		t.Fatal("no port free on every loopback address")
	}
	for name, ln := range lns {
		c.startNode(name, addrs[name], ln)
	}
	c.ca = filepath.Join(t.TempDir(), "cloud-ca.pem")
	if err := os.WriteFile(c.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.nodes["dns"].srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// startNode serves node name on ln.
func (c *testCloud) startNode(name string, addr netip.Addr, ln net.Listener) {
	n := &testNode{name: name, addr: addr, hub: &hub.Hub{}}
	n.hub.SetHandler(func(_ tunnel.Meta, st *tunnel.Stream) {
		n.opened.Add(1)
		_ = st.Ack(true, "")
		_, _ = io.Copy(st, st)
	})
	api := regapi.New(c.reg, regapi.Config{Zone: "box.test", Nodes: c, Tunnel: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.hub.ServeTunnel(w, r, c.authenticate, tunnel.Config{})
	})})
	n.srv = httptest.NewUnstartedServer(api)
	n.srv.Listener = ln
	n.srv.Config.ConnState = func(conn net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.mu.Lock()
			n.conns = append(n.conns, conn)
			n.mu.Unlock()
		}
	}
	n.srv.StartTLS()
	c.t.Cleanup(n.kill)
	c.nodes[name] = n
}

// restart starts a killed node again on its address and port.
func (c *testCloud) restart(name string) {
	c.t.Helper()
	old := c.nodes[name]
	ln, err := net.Listen("tcp", net.JoinHostPort(old.addr.String(), strconv.Itoa(c.port)))
	if err != nil {
		c.t.Fatal(err)
	}
	c.startNode(name, old.addr, ln)
}

// authenticate is the node's check of a tunnel handshake: the token must
// be the named gateway's.
func (c *testCloud) authenticate(ctx context.Context, name, key string) error {
	g, err := c.reg.Authenticate(ctx, key)
	if err != nil || g.Name != name {
		return &tunnel.RefusedError{Reason: "unknown token"}
	}
	return nil
}

func (n *testNode) kill() { n.killed.Do(n.crash) }

func (n *testNode) crash() {
	n.srv.Listener.Close()
	n.mu.Lock()
	for _, conn := range n.conns {
		conn.Close()
	}
	n.mu.Unlock()
	n.srv.Close()
	n.hub.Close()
}

// session is the node's live tunnel of gateway, nil if none.
func (n *testNode) session(gateway string) hub.Tunnel {
	tun, ok := n.hub.Lookup(gateway)
	if !ok {
		return nil
	}
	return tun
}

// echo sends a line through the node's tunnel of gateway to the agent,
// whose upstream echoes it.
func (n *testNode) echo(gateway string) error {
	tun := n.session(gateway)
	if tun == nil {
		return errors.New("no tunnel on " + n.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := tun.Open(ctx, tunnel.Meta{Gateway: gateway, Client: netip.MustParseAddrPort("192.0.2.1:1234")})
	if err != nil {
		return err
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(5 * time.Second))
	msg := "through " + n.name
	if _, err := io.WriteString(st, msg); err != nil {
		return err
	}
	_ = st.CloseWrite()
	got, err := io.ReadAll(st)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

// echoUpstream is the gateway's app in passthrough mode: a TCP echo.
func echoUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(conn, conn)
			})
		}
	})
	return ln.Addr().String()
}

// nodesAgentConfig is the configuration of an agent of c in passthrough
// mode (no certificate needed for its tunnels) with no local listeners.
func nodesAgentConfig(t *testing.T, c *testCloud) config.Config {
	cfg := config.Default()
	cfg.Cloud = fmt.Sprintf("https://example.com:%d", c.port)
	cfg.Resolve = []string{"example.com=127.0.0.1"}
	cfg.CloudCA, cfg.StateDir = c.ca, t.TempDir()
	cfg.ACMECA = "https://127.0.0.1:1/directory"
	cfg.SetupListen, cfg.HTTPSListen, cfg.APIListen, cfg.MDNS = "", "", "", false
	cfg.Passthrough, cfg.Upstream = true, echoUpstream(t)
	return cfg
}

// nodesAgentOptions reconnect and refresh the node list fast.
func nodesAgentOptions() Options {
	return Options{Version: "test", NodesRefresh: 300 * time.Millisecond,
		TunnelBackoff: client.Backoff{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond, ProbeInterval: -1}}
}

// nodesAgent is an agent of c (nodesAgentConfig, nodesAgentOptions); the
// test drives its steps (not Run).
func nodesAgent(t *testing.T, c *testCloud, connections int) (*Agent, *state.Registration) {
	t.Helper()
	cfg := nodesAgentConfig(t, c)
	cfg.TunnelConnections = connections
	a, err := New(cfg, nodesAgentOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.runCtx = ctx
	t.Cleanup(func() {
		a.stopTunnel()
		cancel()
		_ = a.proxy.Shutdown(context.Background())
		a.certs.Stop()
		a.api.HTTPClient.CloseIdleConnections()
	})
	return a, subscribe(t, a, "twonodes")
}

// connectedTo is the nodes of the agent's connected tunnels, as its
// status shows them.
func connectedTo(a *Agent) map[string]bool {
	m := map[string]bool{}
	for _, c := range a.Status().Tunnel.Connections {
		if c.Connected {
			m[c.Node] = true
		}
	}
	return m
}

// The agent keeps a tunnel on each of two nodes: it starts through DNS
// while the cloud lists no nodes, moves to two distinct nodes once it
// lists them, serves streams arriving on either, carries on through one
// when the other dies, and replaces the dead one with a third node while
// leaving the tunnel that works alone.
func TestTunnelsToTwoNodes(t *testing.T) {
	c := startTestCloud(t, 2, 3, 4)
	a, reg := nodesAgent(t, c, 2)
	a.ensureTunnel(reg)
	name := reg.Name
	dns := c.nodes["dns"]
	testtools.Eventually(t, 10*time.Second, "the tunnel through DNS", func() bool { return dns.session(name) != nil })
	if err := dns.echo(name); err != nil {
		t.Fatal(err)
	}

	c.list("node-2", "node-3")
	testtools.Eventually(t, 10*time.Second, "one session on each listed node", func() bool {
		return c.nodes["node-2"].session(name) != nil && c.nodes["node-3"].session(name) != nil && dns.session(name) == nil
	})
	testtools.Eventually(t, 5*time.Second, "the status showing both", func() bool {
		m := connectedTo(a)
		return len(m) == 2 && m["node-2"] && m["node-3"]
	})
	for _, n := range []string{"node-2", "node-3"} {
		if err := c.nodes[n].echo(name); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	st := a.Status().Tunnel
	if !st.Connected || len(st.Connections) != 2 || st.Connections[0].Addr == st.Connections[1].Addr {
		t.Fatalf("status: %+v", st)
	}

	// Forwardings leave on a tunnel that is up; after its node dies they
	// leave on the other.
	first := openForward(t, a, c)
	survivor := map[string]string{"node-2": "node-3", "node-3": "node-2"}[first]
	kept := c.nodes[survivor].session(name)
	c.nodes[first].kill()
	for i := range 20 {
		if err := c.nodes[survivor].echo(name); err != nil {
			t.Fatalf("echo %d through %s after %s died: %v", i, survivor, first, err)
		}
	}
	testtools.Eventually(t, 10*time.Second, "a forwarding through the survivor", func() bool {
		return openForwardOK(a, c) == survivor
	})

	// The dead node stays listed (its lease runs): the agent retries it
	// and, once it has failed a few times, takes the spare node.
	c.list("node-2", "node-3", "node-4")
	testtools.Eventually(t, 10*time.Second, "a replacement tunnel on node-4", func() bool {
		m := connectedTo(a)
		return c.nodes["node-4"].session(name) != nil && len(m) == 2 && m[survivor] && m["node-4"]
	})
	if err := c.nodes["node-4"].echo(name); err != nil {
		t.Fatal(err)
	}
	if c.nodes[survivor].session(name) != kept {
		t.Fatal("the tunnel that worked was reconnected")
	}
	// The dead node leaves the list: nothing changes for the two that work.
	c.list("node-4", survivor)
	time.Sleep(time.Second)
	if c.nodes[survivor].session(name) != kept || len(a.Status().Tunnel.Connections) != 2 {
		t.Fatalf("after the list changed: %+v", a.Status().Tunnel)
	}
}

// openForward opens a forwarding stream through the agent's tunnels and
// returns the node it left on.
func openForward(t *testing.T, a *Agent, c *testCloud) string {
	t.Helper()
	n := openForwardOK(a, c)
	if n == "" {
		t.Fatal("no forwarding stream opened")
	}
	return n
}

func openForwardOK(a *Agent, c *testCloud) string {
	before := map[string]int64{}
	for name, n := range c.nodes {
		before[name] = n.opened.Load()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := tunnelOpener{a}.Open(ctx, tunnel.Initiator{Gatename: "othergw", Ip: "192.168.1.10", Port: 22})
	if err != nil {
		return ""
	}
	st.Close()
	for name, n := range c.nodes {
		if n.opened.Load() > before[name] {
			return name
		}
	}
	return ""
}

// With tunnel_connections 1 the agent behaves as before there were
// nodes: one tunnel through DNS, and it never asks for the node list.
func TestOneTunnelConnectionIgnoresNodes(t *testing.T) {
	c := startTestCloud(t, 2, 3)
	c.list("node-2", "node-3")
	a, reg := nodesAgent(t, c, 1)
	a.ensureTunnel(reg)
	testtools.Eventually(t, 10*time.Second, "the tunnel through DNS", func() bool { return c.nodes["dns"].session(reg.Name) != nil })
	time.Sleep(time.Second)
	if c.nodes["node-2"].session(reg.Name) != nil || c.nodes["node-3"].session(reg.Name) != nil {
		t.Fatal("a tunnel to a listed node with tunnel_connections 1")
	}
	if n := c.listing.Load(); n != 0 {
		t.Fatalf("the node list was asked for %d times", n)
	}
	if conns := a.Status().Tunnel.Connections; len(conns) != 1 || conns[0].Node != "" || !conns[0].Connected {
		t.Fatalf("status: %+v", conns)
	}
}

// A node that dies while it stays listed (no spare node to go to) is
// retried until it is back; the other tunnel carries the traffic
// meanwhile.
func TestTunnelReturnsToARestartedNode(t *testing.T) {
	c := startTestCloud(t, 2, 3)
	c.list("node-2", "node-3")
	// node-3's first address answers nothing (an address family the
	// gateway lacks, say): the tunnel goes to the next one.
	c.mu.Lock()
	c.listed[1].Addrs = []netip.Addr{netip.MustParseAddr("127.0.0.9"), c.nodes["node-3"].addr}
	c.mu.Unlock()
	a, reg := nodesAgent(t, c, 2)
	a.ensureTunnel(reg)
	name := reg.Name
	testtools.Eventually(t, 10*time.Second, "one session on each node", func() bool {
		return c.nodes["node-2"].session(name) != nil && c.nodes["node-3"].session(name) != nil
	})
	if c.nodes["dns"].session(name) != nil {
		t.Fatal("a tunnel through DNS although the cloud lists two nodes")
	}
	c.nodes["node-3"].kill()
	testtools.Eventually(t, 5*time.Second, "the status showing node-3 down", func() bool {
		m := connectedTo(a)
		return len(m) == 1 && m["node-2"]
	})
	if st := a.Status(); !st.Tunnel.Connected || len(st.Problems) != 0 {
		t.Fatalf("one tunnel of two is up: %+v", st)
	}
	if err := c.nodes["node-2"].echo(name); err != nil {
		t.Fatal(err)
	}
	c.restart("node-3")
	testtools.Eventually(t, 10*time.Second, "the tunnel back on node-3", func() bool {
		return c.nodes["node-3"].session(name) != nil && len(connectedTo(a)) == 2
	})
	if err := c.nodes["node-3"].echo(name); err != nil {
		t.Fatal(err)
	}
	for _, conn := range a.Status().Tunnel.Connections {
		if want := map[string]string{"node-2": "127.0.0.2", "node-3": "127.0.0.3"}[conn.Node]; conn.Addr != want {
			t.Errorf("tunnel to %s shows address %s, want %s", conn.Node, conn.Addr, want)
		}
	}

	// Another name (a rename, a reclaim): every tunnel starts again for it.
	other := subscribe(t, a, "renamed")
	a.ensureTunnel(other)
	testtools.Eventually(t, 10*time.Second, "both tunnels under the new name", func() bool {
		for _, n := range []string{"node-2", "node-3"} {
			if c.nodes[n].session(other.Name) == nil || c.nodes[n].session(name) != nil {
				return false
			}
		}
		return true
	})
}

// An empty node list (a cloud back to one node, or an API node that has
// not learned its peers yet) stops no tunnel that works; those that go
// down stop, and once none is left the agent goes through DNS.
func TestEmptyNodeListKeepsWorkingTunnels(t *testing.T) {
	c := startTestCloud(t, 2, 3)
	c.list("node-2", "node-3")
	a, reg := nodesAgent(t, c, 2)
	a.ensureTunnel(reg)
	name := reg.Name
	testtools.Eventually(t, 10*time.Second, "one session on each node", func() bool {
		return c.nodes["node-2"].session(name) != nil && c.nodes["node-3"].session(name) != nil
	})
	kept := c.nodes["node-2"].session(name)
	c.list()
	time.Sleep(time.Second) // a few refreshes
	if len(connectedTo(a)) != 2 || c.nodes["dns"].session(name) != nil {
		t.Fatalf("after an empty list: %+v", a.Status().Tunnel)
	}
	c.nodes["node-3"].kill()
	testtools.Eventually(t, 5*time.Second, "the dead node's tunnel stopped", func() bool {
		return len(a.Status().Tunnel.Connections) == 1
	})
	if c.nodes["node-2"].session(name) != kept || c.nodes["dns"].session(name) != nil {
		t.Fatal("the working tunnel was touched")
	}
	c.nodes["node-2"].kill()
	testtools.Eventually(t, 5*time.Second, "the tunnel through DNS", func() bool { return c.nodes["dns"].session(name) != nil })
	if err := c.nodes["dns"].echo(name); err != nil {
		t.Fatal(err)
	}
}

// Run with the default two connections against a cloud of two nodes: it
// registers, keeps a tunnel on each, shows both in the local API's
// status, and on cancel returns promptly, ending both sessions.
func TestRunKeepsTwoTunnelsAndStopsThem(t *testing.T) {
	c := startTestCloud(t, 2, 3)
	c.list("node-2", "node-3")
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := free.Addr().String()
	free.Close()
	cfg := nodesAgentConfig(t, c)
	cfg.APIListen = apiAddr
	cfg.MAC, cfg.LocalAddrs = "02:00:00:00:00:2b", []string{"127.0.0.1"}
	if cfg.TunnelConnections != 2 {
		t.Fatalf("default tunnel_connections %d, want 2", cfg.TunnelConnections)
	}
	a, err := New(cfg, nodesAgentOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var name string
	testtools.Eventually(t, 15*time.Second, "a session on each node", func() bool {
		name = a.Status().Name
		return name != "" && c.nodes["node-2"].session(name) != nil && c.nodes["node-3"].session(name) != nil
	})
	key, err := localapi.LoadOrCreateKey(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 5*time.Second, "the local API showing both tunnels", func() bool {
		st, err := (&localapi.Client{Base: "http://" + apiAddr, Key: key}).Status(context.Background())
		if err != nil {
			return false
		}
		nodes := map[string]bool{}
		for _, conn := range st.Tunnel.Connections {
			nodes[conn.Node] = conn.Connected
		}
		return len(nodes) == 2 && nodes["node-2"] && nodes["node-3"]
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the cancel")
	}
	for _, n := range []string{"node-2", "node-3"} {
		testtools.Eventually(t, 5*time.Second, "the session on "+n+" ended", func() bool { return c.nodes[n].session(name) == nil })
	}
}
