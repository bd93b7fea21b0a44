package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// peers is a membership the test edits.
type peers struct {
	mu    sync.Mutex
	addrs map[string]string
}

func (p *peers) Peer(name string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.addrs[name]
	return a, ok
}

func (p *peers) set(name, addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addrs[name] = addr
}

// locals is a Local with fixed tunnels.
type locals map[string]hub.Tunnel

func (l locals) Lookup(name string) (hub.Tunnel, bool) { t, ok := l[name]; return t, ok }

// fakeTunnel is a local tunnel whose streams are TCP connections to a
// test server; it records the Meta of each Open.
type fakeTunnel struct {
	addr   string
	refuse string
	mu     sync.Mutex
	metas  []tunnel.Meta
	done   chan struct{}
}

func (f *fakeTunnel) Open(ctx context.Context, m tunnel.Meta) (hub.Stream, error) {
	f.mu.Lock()
	f.metas = append(f.metas, m)
	f.mu.Unlock()
	if f.refuse != "" {
		return nil, &tunnel.RefusedError{Reason: f.refuse}
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}
func (f *fakeTunnel) Done() <-chan struct{}               { return f.done }
func (f *fakeTunnel) Err() error                          { return nil }
func (f *fakeTunnel) CloseWithReason(reason string) error { return nil }
func (f *fakeTunnel) Kind() string                        { return "fake" }

type cluster struct {
	ca    *testcert.Cert
	peers *peers
	// wrap, when set, wraps the listener of the nodes started next.
	wrap func(net.Listener) net.Listener
}

func newCluster(t *testing.T) *cluster {
	return &cluster{ca: testcert.MustCA(t, testcert.Options{DNSNames: []string{"cluster ca"}}), peers: &peers{addrs: map[string]string{}}}
}

func nodeCert(t *testing.T, ca *testcert.Cert, name string) *testcert.Cert {
	return ca.MustIssue(t, testcert.Options{DNSNames: []string{name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
}

// node starts a link for name with a certificate from ca, serving on a
// loopback port that becomes its address in the membership when member.
func (c *cluster) node(t *testing.T, name string, ca *testcert.Cert, local Local, member bool) *Link {
	t.Helper()
	return c.nodeWith(t, Config{Name: name, Cert: nodeCert(t, ca, name).TLS(), Local: local}, member)
}

// nodeWith starts a link with cfg, given the cluster's CA and membership.
func (c *cluster) nodeWith(t *testing.T, cfg Config, member bool) *Link {
	t.Helper()
	name := cfg.Name
	cfg.CA, cfg.Peers = c.ca.Pool(), c.peers
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if member {
		c.peers.set(name, ln.Addr().String())
	}
	if c.wrap != nil {
		ln = c.wrap(ln)
	}
	served := make(chan error, 1)
	go func() { served <- l.Serve(ln) }()
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve %s: %v", name, err)
		}
	})
	return l
}

// gatewayServer accepts one connection: it sends out, reads everything
// the other way until EOF, and reports the SHA-256 of what it read.
func gatewayServer(t *testing.T, out []byte) (addr string, got <-chan [32]byte) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan [32]byte, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var wg sync.WaitGroup
		wg.Go(func() {
			_, _ = c.Write(out)
			_ = c.(*net.TCPConn).CloseWrite()
		})
		h := sha256.New()
		_, _ = io.Copy(h, c)
		wg.Wait()
		ch <- [32]byte(h.Sum(nil))
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), ch
}

func TestRelayTransfersBytesExactly(t *testing.T) {
	const size = 16 << 20
	down := make([]byte, size)
	up := make([]byte, size)
	rand.Read(down)
	rand.Read(up)
	addr, got := gatewayServer(t, down)

	c := newCluster(t)
	gw := &fakeTunnel{addr: addr, done: make(chan struct{})}
	a := c.node(t, "node-a", c.ca, nil, true)
	b := c.node(t, "node-b", c.ca, locals{"home": gw}, true)

	r := a.Relay("node-b")
	if r.Kind() != KindRelay || r.Node() != "node-b" || a.Relay("NODE-B") != r {
		t.Fatalf("relay %q to %q", r.Kind(), r.Node())
	}
	meta := tunnel.Meta{Gateway: "home", ServerName: "www.home.box.example.org", Client: netip.MustParseAddrPort("198.51.100.7:40000")}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := r.Open(ctx, meta)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	exchange(t, st, up, down)
	t.Logf("16 MiB each way through the link in %v", time.Since(start))
	if h := <-got; h != sha256.Sum256(up) {
		t.Fatal("the gateway did not receive the bytes sent")
	}
	gw.mu.Lock()
	if len(gw.metas) != 1 || gw.metas[0] != meta {
		t.Errorf("local tunnel opened with %+v, want %+v", gw.metas, meta)
	}
	gw.mu.Unlock()
	// The relay counts a chunk just after writing it: the last count may
	// trail the bytes' arrival by a moment.
	deadline := time.Now().Add(5 * time.Second)
	for st := b.Stats(); st.StreamsIn != 1 || st.BytesIn != size || st.BytesOut != size; st = b.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("receiving stats %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := a.Stats(); st.StreamsOut != 1 || st.Sessions != 1 {
		t.Errorf("opening stats %+v", st)
	}

	// One session per pair: b reaches a over the session a dialed.
	if _, err := b.Relay("node-a").Open(ctx, tunnel.Meta{Gateway: "elsewhere"}); !errors.Is(err, tunnel.ErrRefused) {
		t.Fatalf("b to a: %v, want a refusal", err)
	}
	if n := a.Stats().Sessions; n != 1 {
		t.Errorf("a has %d sessions", n)
	}
}

func TestRefusalsCarryReasons(t *testing.T) {
	c := newCluster(t)
	gw := &fakeTunnel{refuse: "refused by home: port 22 not allowed", done: make(chan struct{})}
	a := c.node(t, "node-a", c.ca, nil, true)
	c.node(t, "node-b", c.ca, locals{"home": gw}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		m      tunnel.Meta
		reason string
	}{
		{tunnel.Meta{Gateway: "nobody"}, ReasonNotHere},
		{tunnel.Meta{Gateway: "home", Source: "office", Dest: netip.MustParseAddrPort("192.168.1.2:22")}, gw.refuse},
	} {
		_, err := a.Relay("node-b").Open(ctx, tc.m)
		re, ok := errors.AsType[*tunnel.RefusedError](err)
		if !ok || re.Reason != tc.reason {
			t.Errorf("Open(%+v) = %v, want refusal %q", tc.m, err, tc.reason)
		}
	}
	gw.mu.Lock()
	if len(gw.metas) != 1 || gw.metas[0].Source != "office" || gw.metas[0].Dest.Port() != 22 {
		t.Errorf("forward meta %+v", gw.metas)
	}
	gw.mu.Unlock()
	if _, err := a.Relay("node-z").Open(ctx, tunnel.Meta{Gateway: "home"}); !errors.Is(err, ErrNoPeer) {
		t.Errorf("unknown node: %v, want ErrNoPeer", err)
	}
	r := a.Relay("node-b")
	_ = r.CloseWithReason("node left")
	<-r.Done()
	if _, err := r.Open(ctx, tunnel.Meta{Gateway: "home"}); !errors.Is(err, ErrClosed) {
		t.Errorf("closed relay: %v", err)
	}
	if a.Relay("node-b") == r {
		t.Error("a closed relay is handed out again")
	}
}

// TestMutualTLSRefusals checks who the link refuses: a certificate from
// another CA, a certificate of the right CA for a name that is not a live
// member, and a server whose certificate names another node.
func TestMutualTLSRefusals(t *testing.T) {
	c := newCluster(t)
	gw := &fakeTunnel{refuse: "never reached", done: make(chan struct{})}
	c.node(t, "node-b", c.ca, locals{"home": gw}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A member's name, but a certificate from another CA (and trusting
	// that CA, so only the server side can refuse it).
	rogueCA := testcert.MustCA(t, testcert.Options{DNSNames: []string{"rogue ca"}})
	rogueCfg := Config{Name: "node-a", Cert: nodeCert(t, rogueCA, "node-a").TLS(), CA: c.ca.Pool(), Peers: c.peers}
	rogue, err := New(rogueCfg)
	if err != nil {
		t.Fatal(err)
	}
	c.peers.set("node-a", "127.0.0.1:1")
	_, err = rogue.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if err == nil || errors.Is(err, tunnel.ErrRefused) {
		t.Errorf("certificate of another CA: %v, want a TLS failure", err)
	}
	_ = rogue.Close()

	// The right CA, but not a member.
	outsider, err := New(Config{Name: "node-x", Cert: nodeCert(t, c.ca, "node-x").TLS(), CA: c.ca.Pool(), Peers: c.peers})
	if err != nil {
		t.Fatal(err)
	}
	_, err = outsider.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if err == nil || errors.Is(err, tunnel.ErrRefused) {
		t.Errorf("non-member: %v, want a TLS failure", err)
	}
	_ = outsider.Close()

	// A member's certificate, but claiming another member's name in the
	// tunnel handshake.
	liar, err := New(Config{Name: "node-a", Cert: nodeCert(t, c.ca, "node-c").TLS(), CA: c.ca.Pool(), Peers: c.peers})
	if err != nil {
		t.Fatal(err)
	}
	c.peers.set("node-c", "127.0.0.1:1")
	_, err = liar.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if !errors.Is(err, tunnel.ErrRefused) {
		t.Errorf("name not the certificate's: %v, want a handshake refusal", err)
	}
	_ = liar.Close()

	// The dialer checks the server: node-a's address answered by node-b.
	honest := c.node(t, "node-d", c.ca, nil, true)
	bAddr, _ := c.peers.Peer("node-b")
	c.peers.set("node-a", bAddr)
	if _, err := honest.Relay("node-a").Open(ctx, tunnel.Meta{Gateway: "home"}); err == nil || errors.Is(err, tunnel.ErrRefused) {
		t.Errorf("server with another node's certificate: %v, want a TLS failure", err)
	}

	gw.mu.Lock()
	defer gw.mu.Unlock()
	if len(gw.metas) != 0 {
		t.Errorf("a refused peer reached the local tunnel: %+v", gw.metas)
	}
}

func TestMetaRoundTrip(t *testing.T) {
	long := make([]byte, 250)
	for i := range long {
		long[i] = 'a'
	}
	for _, m := range []tunnel.Meta{
		{Gateway: "home"},
		{Gateway: "home", ServerName: "home.box.example.org", Client: netip.MustParseAddrPort("[2001:db8::1]:443")},
		{Gateway: "home", Source: "office", Dest: netip.MustParseAddrPort("10.0.0.1:22"), Client: netip.MustParseAddrPort("203.0.113.9:5000")},
	} {
		init, err := encodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMeta(init)
		if err != nil || got != m {
			t.Errorf("round trip of %+v: %+v, %v", m, got, err)
		}
	}
	// With early data too.
	for _, m := range []tunnel.Meta{
		{Gateway: "home"},
		{Gateway: "home", Source: "office", ServerName: "home.box.example.org"},
		{Gateway: "home", ServerName: string(long) + ".home"},
	} {
		init, err := encodeMetaEarly(m, 517)
		if err != nil {
			t.Fatal(err)
		}
		got, early, err := decodeMetaEarly(init)
		if len(m.ServerName) > 200 {
			m.ServerName = "" // dropped, as below
		}
		if err != nil || got != m || early != 517 {
			t.Errorf("round trip of %+v with early data: %+v, %d, %v", m, got, early, err)
		}
	}
	for _, n := range []int{0, -1, tunnel.MaxEarlyData + 1} {
		if _, err := encodeMetaEarly(tunnel.Meta{Gateway: "home"}, n); !errors.Is(err, ErrMalformed) {
			t.Errorf("encodeMetaEarly with %d bytes: %v", n, err)
		}
	}
	for _, bad := range []string{"home|||0", "home|||x", "home|||+5", "home|||016", "home|||99999999"} {
		if _, _, err := decodeMetaEarly(tunnel.Initiator{Gatename: bad}); !errors.Is(err, ErrMalformed) {
			t.Errorf("decodeMetaEarly(%q): %v", bad, err)
		}
	}
	// A server name too long for the wire is dropped, the rest kept.
	m := tunnel.Meta{Gateway: "home", ServerName: string(long) + ".home"}
	init, err := encodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeMeta(init); err != nil || got.Gateway != "home" || got.ServerName != "" {
		t.Errorf("long server name: %+v, %v", got, err)
	}
	for _, bad := range []tunnel.Meta{{}, {Gateway: "a|b"}, {Gateway: "a", Source: "x|y"}} {
		if _, err := encodeMeta(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("encodeMeta(%+v) = %v", bad, err)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add("home", "", uint16(0), "")
	f.Add("home|office|", "10.0.0.1", uint16(22), "203.0.113.9:5000")
	f.Add("home||home.box.example.org", "", uint16(0), "[::1]:1")
	f.Add("|a|b", "x", uint16(1), "bad")
	f.Add("home|office|www.home|517", "", uint16(0), "")
	f.Fuzz(func(t *testing.T, gatename, ip string, port uint16, client string) {
		m, early, err := decodeMetaEarly(tunnel.Initiator{Gatename: gatename, Ip: ip, Port: port, ClientAddr: client})
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What decodes encodes back to the same Meta.
		init, err := encodeMeta(m)
		if early > 0 {
			init, err = encodeMetaEarly(m, early)
		}
		if err != nil {
			if len(gatename) > maxGatename {
				return
			}
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		back, backEarly, err := decodeMetaEarly(init)
		if err != nil || back != m || backEarly != early {
			t.Fatalf("re-decoded %+v as %+v, %v", m, back, err)
		}
	})
}

// A relay ends when its node leaves the cluster and when the link session
// to its node dies, so that nothing keeps a dead way to a gateway; the
// next Relay for the node is a fresh one that works again.
func TestRelayEndsWithItsNodeOrSession(t *testing.T) {
	c := newCluster(t)
	gw := &fakeTunnel{refuse: "no thanks", done: make(chan struct{})}
	a := c.node(t, "node-a", c.ca, nil, true)
	b := c.node(t, "node-b", c.ca, locals{"home": gw}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reach := func(r *Relay) {
		t.Helper()
		if _, err := r.Open(ctx, tunnel.Meta{Gateway: "home"}); !errors.As(err, new(*tunnel.RefusedError)) {
			t.Fatalf("Open through the link: %v, want the gateway's refusal", err)
		}
	}
	ended := func(r *Relay, what string) {
		t.Helper()
		select {
		case <-r.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("relay still open after %s", what)
		}
		if !errors.Is(r.Err(), ErrClosed) {
			t.Fatalf("relay error %v after %s", r.Err(), what)
		}
	}

	r := a.Relay("node-b")
	reach(r)
	a.NodeLeft("node-b")
	ended(r, "NodeLeft")
	if a.Stats().Sessions != 0 {
		t.Fatal("the link session to a departed node stays up")
	}

	r = a.Relay("node-b")
	reach(r)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	ended(r, "the link session died")
}

// exchange sends up on st and half-closes it while it reads st to its end,
// which must be down; it closes st.
func exchange(t *testing.T, st interface {
	io.ReadWriteCloser
	CloseWrite() error
}, up, down []byte) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := st.Write(up); err != nil {
			t.Errorf("write: %v", err)
		}
		if err := st.CloseWrite(); err != nil {
			t.Errorf("close write: %v", err)
		}
	})
	read, err := io.ReadAll(st)
	wg.Wait()
	_ = st.Close()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(read, down) {
		t.Fatalf("read %d bytes, not the %d the gateway sent", len(read), len(down))
	}
}
