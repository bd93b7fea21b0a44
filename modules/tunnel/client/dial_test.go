package client

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestBatchingTransportOnlyWrapsPlainDials(t *testing.T) {
	var d batchDial
	if batchingTransport(roundTripFunc(nil), &d) != nil {
		t.Error("wrapped a RoundTripper that is not an *http.Transport")
	}
	tlsDialer := &http.Transport{DialTLSContext: func(context.Context, string, string) (net.Conn, error) { return nil, io.EOF }}
	if batchingTransport(tlsDialer, &d) != nil {
		t.Error("wrapped a transport that dials its own TLS connections")
	}
	base := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "cloud.test"}}
	tr := batchingTransport(base, &d)
	if tr == nil || tr == base {
		t.Fatal("a plain transport is not copied")
	}
	if tr.TLSClientConfig.ServerName != "cloud.test" {
		t.Error("the copy lost the TLS configuration")
	}
	if base.DialContext != nil {
		t.Error("the caller's transport was changed")
	}
	if batchingTransport(nil, &d) == nil {
		t.Error("nil (http.DefaultTransport) is not wrapped")
	}
}

// oldCloud accepts the tunnel as clouds before the raw transport did: a
// WebSocket, whatever else the request offers.
func oldCloud(w http.ResponseWriter, r *http.Request) (tunnel.Conn, error) {
	wc, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil, err
	}
	return tunnel.WebSocketConn(wc), nil
}

// newCloud accepts the tunnel as the hub does.
// rawCloud accepts the tunnel as clouds before the sealed transport did:
// the raw transport when offered, whatever else the request offers.
func rawCloud(w http.ResponseWriter, r *http.Request) (tunnel.Conn, error) {
	if !tunnel.OffersRaw(r) {
		return oldCloud(w, r)
	}
	nc, rd, err := tunnel.HijackUpgrade(w, tunnel.RawUpgrade)
	if err != nil {
		return nil, err
	}
	return tunnel.RawConn(nc, rd, nil), nil
}

func newCloud(w http.ResponseWriter, r *http.Request) (tunnel.Conn, error) {
	conn, _, err := tunnel.AcceptTransport(w, r)
	return conn, err
}

// TestBatchedSessionOverTLS sends data both ways over a session between
// the client and a cloud over HTTPS, and checks that every byte arrives
// in order, that the client's writes are batched, and which transport the
// two ends agree on: the raw one when both know it, a WebSocket with an
// older cloud or a client that offers only that.
func TestBatchedSessionOverTLS(t *testing.T) {
	for _, tc := range []struct {
		name          string
		accept        func(http.ResponseWriter, *http.Request) (tunnel.Conn, error)
		websocketOnly bool
		want          string
	}{
		{"sealed", newCloud, false, tunnel.SealedUpgrade},
		{"raw cloud", rawCloud, false, tunnel.RawUpgrade},
		{"old cloud", oldCloud, false, tunnel.TransportWebSocket},
		{"websocket only", newCloud, true, tunnel.TransportWebSocket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accepted := make(chan *tunnel.Session, 1)
			offered := make(chan bool, 1)
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				offered <- tunnel.OffersRaw(r)
				conn, err := tc.accept(w, r)
				if err != nil {
					return
				}
				s, err := tunnel.NewSession(conn, tunnel.Config{})
				if err != nil {
					return
				}
				accepted <- s
				<-s.Done()
			}))
			defer srv.Close()

			c := &Client{URL: "wss" + srv.URL[len("https"):], HTTPClient: srv.Client(), WebSocketOnly: tc.websocketOnly}
			conn, transport, bc, err := c.dial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if transport != tc.want {
				t.Errorf("transport %q, want %q", transport, tc.want)
			}
			if <-offered == tc.websocketOnly {
				t.Errorf("raw transport offered: %v, with WebSocketOnly %v", !tc.websocketOnly, tc.websocketOnly)
			}
			if bc == nil {
				t.Fatal("the client's writes are not batched")
			}
			cs, err := tunnel.NewSession(conn, tunnel.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			ss := <-accepted
			defer ss.Close()

			payload := make([]byte, 4<<20)
			rand.Read(payload)
			want := sha256.Sum256(payload)
			echoed := make(chan [sha256.Size]byte, 1)
			go func() {
				defer close(echoed)
				st, err := cs.Open(context.Background(), tunnel.Initiator{Gatename: "home"})
				if err != nil {
					t.Error(err)
					return
				}
				defer st.Close()
				go func() {
					st.Write(payload)
					st.CloseWrite()
				}()
				h := sha256.New()
				if _, err := io.Copy(h, st); err != nil {
					t.Error(err)
					return
				}
				echoed <- [sha256.Size]byte(h.Sum(nil))
			}()
			st, err := ss.Accept(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			st.Ack(true, "")
			// The cloud's side echoes: data flows both ways at once.
			if _, err := io.Copy(st, st); err != nil {
				t.Fatal(err)
			}
			st.CloseWrite()
			if got := <-echoed; got != want {
				t.Fatal("the data arrived changed")
			}
			st.Close()
		})
	}
}

// TestCloseUnblocksAStalledBatchedWrite: a peer that stops reading leaves
// the client's writer blocked in a batch's one write; Close must free it at
// once, not after the TLS close_notify's five-second write deadline.
func TestCloseUnblocksAStalledBatchedWrite(t *testing.T) {
	for name, accept := range map[string]func(http.ResponseWriter, *http.Request) (tunnel.Conn, error){
		"sealed": newCloud, "raw": rawCloud, "websocket": oldCloud,
	} {
		t.Run(name, func(t *testing.T) { testCloseUnblocksAStalledBatchedWrite(t, accept) })
	}
}

func testCloseUnblocksAStalledBatchedWrite(t *testing.T, accept func(http.ResponseWriter, *http.Request) (tunnel.Conn, error)) {
	stop := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := accept(w, r)
		if err != nil {
			return
		}
		<-stop // never reads
		conn.Close()
	}))
	defer srv.Close()
	defer close(stop)

	c := &Client{URL: "wss" + srv.URL[len("https"):], HTTPClient: srv.Client()}
	conn, _, _, err := c.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, tunnel.MaxFrameSize)
	wrote := make(chan struct{}, 1)
	writeErr := make(chan error, 1)
	go func() {
		for {
			if err := conn.WriteMessage(context.Background(), frame); err != nil {
				writeErr <- err
				return
			}
			select {
			case wrote <- struct{}{}:
			default:
			}
		}
	}()
	// Wait until the writer has been stuck for a while.
	for stalled := false; !stalled; {
		select {
		case <-wrote:
		case <-time.After(300 * time.Millisecond):
			stalled = true
		case <-time.After(20 * time.Second):
			t.Fatal("the peer's buffers never filled")
		}
	}
	start := time.Now()
	conn.Close()
	select {
	case <-writeErr:
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled write never returned")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v to free the stalled write", d)
	}
}

// TestSealedFallsBackBehindATLSProxy: between the agent and a cloud that
// offers the sealed transport sits a proxy that ends TLS and opens its own
// TLS connection to the cloud, passing the bytes on (as stunnel or HAProxy
// in TLS mode do). The cloud's binding is then of the proxy's TLS
// connection, not the agent's: the agent must notice, dial again without
// the offer, and end up on the raw transport, which works through such a
// proxy.
func TestSealedFallsBackBehindATLSProxy(t *testing.T) {
	h := &hub.Hub{}
	defer h.Close()
	cloud := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeTunnel(w, r, authenticate, tunnel.Config{})
	}))
	defer cloud.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cloud.TLS.Clone())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	toCloud := cloud.Client().Transport.(*http.Transport).TLSClientConfig
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := tls.Dial("tcp", cloud.Listener.Addr().String(), toCloud)
				if err != nil {
					return
				}
				relay.Conns(context.Background(), c, up, relay.Counts{})
				up.Close()
			}()
		}
	}()
	proxyURL := "wss://" + ln.Addr().String()

	c := &Client{URL: proxyURL, Name: "home", Token: "tok", Handler: echoHandler, Backoff: fastBackoff()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.HTTPClient = cloud.Client()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !c.State().Connected {
		if time.Now().After(deadline) {
			t.Fatalf("not connected through the proxy: %v", c.State().LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.State().Transport; got != tunnel.RawUpgrade {
		t.Fatalf("transport %q through a TLS proxy, want %q", got, tunnel.RawUpgrade)
	}
	if !c.noSealed.Load() {
		t.Error("the client still offers the sealed transport")
	}
	echoThrough(t, h)

	// Straight to the cloud, the same client setup gets the sealed one.
	c2 := &Client{URL: "wss" + cloud.URL[len("https"):], Name: "home", Token: "tok", Handler: echoHandler, Backoff: fastBackoff(), HTTPClient: cloud.Client()}
	conn, transport, _, err := c2.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if transport != tunnel.SealedUpgrade {
		t.Errorf("transport %q straight to the cloud, want %q", transport, tunnel.SealedUpgrade)
	}
}
