package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
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

// Nodes of this release link over the raw transport and send a stream's
// early data on with the opening of the gateway's leg; a node of an older
// release (WebSocket only, as a rolling upgrade has them) links with either
// side over a WebSocket and gets the early data as plain bytes after the
// Ack. The bytes arrive exactly every way.
func TestTransportsAndEarlyData(t *testing.T) {
	for _, tc := range []struct {
		dialerOld, acceptorOld bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("old dialer %v, old acceptor %v", tc.dialerOld, tc.acceptorOld), func(t *testing.T) {
			raw := !tc.dialerOld && !tc.acceptorOld
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
			a := c.nodeWith(t, Config{Name: "node-a", Cert: nodeCert(t, c.ca, "node-a").TLS(), WebSocketOnly: tc.dialerOld, Logger: slog.New(&logA)}, true)
			c.nodeWith(t, Config{Name: "node-b", Cert: nodeCert(t, c.ca, "node-b").TLS(), WebSocketOnly: tc.acceptorOld, Logger: slog.New(&logB), Local: locals{"home": gw}}, true)

			meta := tunnel.Meta{Gateway: "home", ServerName: "www.home.box.example.org", Client: netip.MustParseAddrPort("198.51.100.7:40000")}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := a.Relay("node-b").OpenEarly(ctx, meta, hello)
			if err != nil {
				t.Fatal(err)
			}
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
			if h := <-got; h != sha256.Sum256(append(bytes.Clone(hello), up...)) {
				t.Fatal("the gateway did not receive the early data and then the bytes sent")
			}

			want := tunnel.TransportWebSocket
			if raw {
				want = tunnel.RawUpgrade
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
			case raw && (len(gw.early) != 1 || !bytes.Equal(gw.early[0], hello)):
				t.Errorf("the gateway's leg opened with %d early openings, want the ClientHello", len(gw.early))
			case !raw && len(gw.early) != 0:
				t.Errorf("an older node cannot have sent early data on: %d early openings", len(gw.early))
			}
		})
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
// write, not one per TLS record (four per full frame).
func TestAcceptedRawSessionWritesFramesWhole(t *testing.T) {
	const size = 4 << 20
	down := make([]byte, size)
	rand.Read(down)
	addr, got := gatewayServer(t, down)

	c := newCluster(t)
	a := c.node(t, "node-a", c.ca, nil, true)
	var writes atomic.Int64
	c.wrap = func(ln net.Listener) net.Listener { return writeCounter{ln, &writes} }
	c.node(t, "node-b", c.ca, locals{"home": &fakeTunnel{addr: addr, done: make(chan struct{})}}, true)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := a.Relay("node-b").Open(ctx, tunnel.Meta{Gateway: "home"})
	if err != nil {
		t.Fatal(err)
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
