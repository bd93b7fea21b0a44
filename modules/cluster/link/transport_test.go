package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// earlyTunnel is a fakeTunnel that takes early data, as the hub's tunnels
// do: it records what came with each opening and sends it first.
type earlyTunnel struct {
	*fakeTunnel
	mu    sync.Mutex
	early [][]byte
}

func (e *earlyTunnel) OpenEarly(ctx context.Context, m tunnel.Meta, early []byte) (hub.Stream, error) {
	e.mu.Lock()
	e.early = append(e.early, bytes.Clone(early))
	e.mu.Unlock()
	st, err := e.Open(ctx, m)
	if err != nil {
		return nil, err
	}
	if _, err := st.Write(early); err != nil {
		_ = st.Close()
		return nil, err
	}
	return st, nil
}

// transports records the transport of each link session a node logs.
type transports struct {
	mu   sync.Mutex
	seen []string
}

func (t *transports) Enabled(context.Context, slog.Level) bool { return true }
func (t *transports) WithAttrs([]slog.Attr) slog.Handler       { return t }
func (t *transports) WithGroup(string) slog.Handler            { return t }
func (t *transports) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "transport" {
			t.mu.Lock()
			t.seen = append(t.seen, r.Message+": "+a.Value.String())
			t.mu.Unlock()
		}
		return true
	})
	return nil
}

func (t *transports) get() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.seen)
}

// release is what a node of some release speaks on the link.
type release int

const (
	releaseWebSocket release = iota // WebSocket only
	releaseRaw                      // and the raw transport gatehouse-tunnel/2
	releaseSealed                   // and the sealed transport gatehouse-tunnel/3: this one
)

func (r release) String() string {
	return [...]string{"websocket", "raw", "sealed"}[r]
}

// config sets cfg up as a node of release r.
func (r release) config(cfg Config) Config {
	cfg.WebSocketOnly = r == releaseWebSocket
	cfg.NoSealed = r == releaseRaw
	return cfg
}

// transport is the transport two nodes of releases a and b link over.
func transport(a, b release) string {
	return [...]string{tunnel.TransportWebSocket, tunnel.RawUpgrade, tunnel.SealedUpgrade}[min(a, b)]
}

// Nodes of this release link over the sealed transport, a node of the
// release before over the raw transport, with either side; both send a
// stream's early data on with the opening of the gateway's leg. A node of
// an older release (WebSocket only) links with any side over a WebSocket
// and gets the early data as plain bytes after the Ack. The bytes arrive
// exactly every way, a rolling upgrade's every pair.
func TestTransportsAndEarlyData(t *testing.T) {
	releases := []release{releaseWebSocket, releaseRaw, releaseSealed}
	for _, dialer := range releases {
		for _, acceptor := range releases {
			t.Run(fmt.Sprintf("dialer %v, acceptor %v", dialer, acceptor), func(t *testing.T) {
				testTransportAndEarlyData(t, dialer, acceptor)
			})
		}
	}
}

func testTransportAndEarlyData(t *testing.T, dialer, acceptor release) {
	want := transport(dialer, acceptor)
	takesEarly := want != tunnel.TransportWebSocket
	down := make([]byte, 1<<20)
	up := make([]byte, 1<<20)
	hello := make([]byte, 1800) // a ClientHello with a post-quantum key share
	rand.Read(down)
	rand.Read(up)
	rand.Read(hello)
	addr, got := gatewayServer(t, down)

	c := newCluster(t)
	gw := &earlyTunnel{fakeTunnel: &fakeTunnel{addr: addr, done: make(chan struct{})}}
	var logA, logB transports
	a := c.nodeWith(t, dialer.config(Config{Name: "node-a", Cert: nodeCert(t, c.ca, "node-a").TLS(), Logger: slog.New(&logA)}), true)
	c.nodeWith(t, acceptor.config(Config{Name: "node-b", Cert: nodeCert(t, c.ca, "node-b").TLS(), Logger: slog.New(&logB), Local: locals{"home": gw}}), true)

	meta := tunnel.Meta{Gateway: "home", ServerName: "www.home.box.example.org", Client: netip.MustParseAddrPort("198.51.100.7:40000")}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := a.Relay("node-b").OpenEarly(ctx, meta, hello)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, st, up, down)
	if h := <-got; h != sha256.Sum256(append(bytes.Clone(hello), up...)) {
		t.Fatal("the gateway did not receive the early data and then the bytes sent")
	}

	if s := logA.get(); !slices.Equal(s, []string{"link session dialed: " + want}) {
		t.Errorf("dialer logged %q, want the %s transport", s, want)
	}
	if s := logB.get(); !slices.Equal(s, []string{"link session accepted: " + want}) {
		t.Errorf("acceptor logged %q, want the %s transport", s, want)
	}
	gw.mu.Lock()
	defer gw.mu.Unlock()
	gw.fakeTunnel.mu.Lock()
	defer gw.fakeTunnel.mu.Unlock()
	if len(gw.metas) != 1 || gw.metas[0] != meta {
		t.Errorf("local tunnel opened with %+v, want %+v", gw.metas, meta)
	}
	switch {
	case takesEarly && (len(gw.early) != 1 || !bytes.Equal(gw.early[0], hello)):
		t.Errorf("the gateway's leg opened with %d early openings, want the ClientHello", len(gw.early))
	case !takesEarly && len(gw.early) != 0:
		t.Errorf("an older node cannot have sent early data on: %d early openings", len(gw.early))
	}
}

// writeCounter counts the writes to the network of the connections its
// listener accepts.
type writeCounter struct {
	net.Listener
	writes *atomic.Int64
}

func (w writeCounter) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countedConn{c, w.writes}, nil
}

type countedConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countedConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// The accepting node sends each Data frame of the raw transport in one
// write, not one per TLS record (four per full frame), and the sealed
// transport's records whole as well.
func TestAcceptedSessionWritesFramesWhole(t *testing.T) {
	for _, dialer := range []release{releaseRaw, releaseSealed} {
		t.Run(dialer.String(), func(t *testing.T) { testAcceptedSessionWritesFramesWhole(t, dialer) })
	}
}

func testAcceptedSessionWritesFramesWhole(t *testing.T, dialer release) {
	const size = 4 << 20
	down := make([]byte, size)
	rand.Read(down)
	addr, got := gatewayServer(t, down)

	c := newCluster(t)
	var logA transports
	a := c.nodeWith(t, dialer.config(Config{Name: "node-a", Cert: nodeCert(t, c.ca, "node-a").TLS(), Logger: slog.New(&logA)}), true)
	var writes atomic.Int64
	c.wrap = func(ln net.Listener) net.Listener { return writeCounter{ln, &writes} }
	c.node(t, "node-b", c.ca, locals{"home": &fakeTunnel{addr: addr, done: make(chan struct{})}}, true)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := a.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if err != nil {
		t.Fatal(err)
	}
	if want := transport(dialer, releaseSealed); !slices.Equal(logA.get(), []string{"link session dialed: " + want}) {
		t.Fatalf("dialer logged %q, want the %s transport", logA.get(), want)
	}
	_ = st.CloseWrite()
	before := writes.Load()
	read, err := io.ReadAll(st)
	_ = st.Close()
	if err != nil || !bytes.Equal(read, down) {
		t.Fatalf("read %d bytes (%v), not the %d the gateway sent", len(read), err, size)
	}
	<-got
	frames := int64(size / tunnel.MaxDataSize)
	// Window frames, pings and the small frames of a gateway that
	// writes in pieces come on top: well under twice the Data frames.
	if n := writes.Load() - before; n > 2*frames {
		t.Errorf("%d writes to the network for %d MiB, %d full Data frames", n, size>>20, frames)
	}
}

// A dialing node checks the sealed transport's binding: an acceptor that
// does not share the dialer's TLS connection (here one that answers with a
// binding of its own making, as something that ended TLS between them
// would) fails the dial, rather than getting records keyed from a
// connection it is not on.
func TestSealedBindingChecked(t *testing.T) {
	c := newCluster(t)
	a := c.node(t, "node-a", c.ca, nil, true)
	cert := nodeCert(t, c.ca, "node-b").TLS()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !tunnel.Offers(r, tunnel.SealedUpgrade) {
			http.Error(w, "no sealed offer", http.StatusBadRequest)
			return
		}
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer nc.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n",
			tunnel.SealedUpgrade, tunnel.SealedBindingHeader, "AAAAAAAAAAAAAAAAAAAAAA")
		_ = brw.Flush()
		_, _ = io.Copy(io.Discard, nc)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c.peers.set("node-b", srv.Listener.Addr().String())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := a.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if err == nil {
		_ = st.Close()
		t.Fatal("the link opened a stream through a peer whose binding is not ours")
	}
	if !errors.Is(err, tunnel.ErrSealedBinding) {
		t.Fatalf("error %v, want ErrSealedBinding", err)
	}
}
