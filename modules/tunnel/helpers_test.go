package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wsPair connects two WebSocket Conns through an httptest server on
// loopback: server is the accepted side, client the dialled one.
func wsPair(t testing.TB) (server, client Conn) {
	t.Helper()
	ch := make(chan *websocket.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		ch <- c
	}))
	t.Cleanup(hs.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, hs.URL, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	client = WebSocketConn(c)
	server = WebSocketConn(<-ch)
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return server, client
}

// pair returns two sessions over a real WebSocket on loopback.
func pair(t testing.TB, serverCfg, clientCfg Config) (server, client *Session) {
	t.Helper()
	sc, cc := wsPair(t)
	return sessionsOver(t, sc, cc, serverCfg, clientCfg)
}

func sessionsOver(t testing.TB, sc, cc Conn, serverCfg, clientCfg Config) (server, client *Session) {
	t.Helper()
	var err error
	server, err = NewSession(sc, serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err = NewSession(cc, clientCfg)
	if err != nil {
		server.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return server, client
}

// serve accepts streams on s and runs handle for each in a goroutine, until
// the session closes. Cleanup closes s and waits for every handler.
func serve(t testing.TB, s *Session, handle func(*Stream)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := s.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				handle(st)
			}()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		wg.Wait()
	})
}

// echo accepts a stream and copies what it reads back until EOF.
func echo(st *Stream) {
	if err := st.Ack(true, ""); err != nil {
		return
	}
	if _, err := io.Copy(st, st); err != nil {
		return
	}
	_ = st.CloseWrite()
}

// waitClosed blocks until st is closed locally or its session ends.
func waitClosed(st *Stream) {
	select {
	case <-st.done:
	case <-st.sess.done:
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// roundTrip writes p on st, half-closes, and returns everything read back.
func roundTrip(st *Stream, p []byte) ([]byte, error) {
	errc := make(chan error, 1)
	go func() {
		_, err := st.Write(p)
		if err == nil {
			err = st.CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(st)
	werr := <-errc
	return got, errors.Join(werr, rerr)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitDone(t testing.TB, s *Session, within time.Duration) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(within):
		t.Fatalf("session still open after %v", within)
	}
}

func mustEqual(t testing.TB, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d (equal prefix? %v)", len(got), len(want), bytes.HasPrefix(want, got))
	}
}
