package client

import (
	"bytes"
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

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
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

// TestBatchedSessionOverTLS sends data from the client side of a session
// over HTTPS, where the client's frames are masked and batched, and checks
// that every byte arrives in order.
func TestBatchedSessionOverTLS(t *testing.T) {
	accepted := make(chan *tunnel.Session, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		s, err := tunnel.NewSession(tunnel.WebSocketConn(wc), tunnel.Config{})
		if err != nil {
			return
		}
		accepted <- s
		<-s.Done()
	}))
	defer srv.Close()

	c := &Client{URL: "wss" + srv.URL[len("https"):], HTTPClient: srv.Client()}
	conn, bc, err := c.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if bc == nil {
		t.Fatal("the client's WebSocket is not batched")
	}
	cs, err := tunnel.NewSession(conn, tunnel.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	ss := <-accepted
	defer ss.Close()

	payload := make([]byte, 8<<20)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	go func() {
		st, err := cs.Open(context.Background(), tunnel.Initiator{Gatename: "home"})
		if err != nil {
			t.Error(err)
			return
		}
		defer st.Close()
		st.Write(payload)
		st.CloseWrite()
		io.Copy(io.Discard, st)
	}()
	st, err := ss.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Ack(true, "")
	h := sha256.New()
	if _, err := io.Copy(h, st); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatal("the data arrived changed")
	}
}

// TestCloseUnblocksAStalledBatchedWrite: a peer that stops reading leaves
// the client's writer blocked in a batch's one write; Close must free it at
// once, not after the TLS close_notify's five-second write deadline.
func TestCloseUnblocksAStalledBatchedWrite(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		<-stop // never reads
		wc.CloseNow()
	}))
	defer srv.Close()
	defer close(stop)

	c := &Client{URL: "wss" + srv.URL[len("https"):], HTTPClient: srv.Client()}
	conn, _, err := c.dial(context.Background())
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
