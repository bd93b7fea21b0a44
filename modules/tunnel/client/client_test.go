package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func authenticate(_ context.Context, name, key string) error {
	if name != "home" || key != "tok" {
		return &tunnel.RefusedError{Reason: "unknown gateway or token"}
	}
	return nil
}

// cloudServer is a hub behind an HTTP server on a fixed loopback address,
// so that it can be stopped and started again.
type cloudServer struct {
	hub  *hub.Hub
	srv  *httptest.Server
	addr string
	once sync.Once
}

func startCloud(t *testing.T, addr string) *cloudServer {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &hub.Hub{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeTunnel(w, r, authenticate, tunnel.Config{})
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	cs := &cloudServer{hub: h, srv: srv, addr: l.Addr().String()}
	t.Cleanup(cs.stop)
	return cs
}

func (cs *cloudServer) url() string { return "ws://" + cs.addr + "/v1/tunnel" }

// stop closes the hub (which ends the tunnel sessions) and the server.
func (cs *cloudServer) stop() {
	cs.once.Do(func() {
		cs.hub.Close()
		cs.srv.Close()
	})
}

func echoHandler(st *tunnel.Stream) {
	if err := st.Ack(true, ""); err != nil {
		return
	}
	io.Copy(st, st)
	st.CloseWrite()
}

// run starts c.Run in the background; cleanup cancels it and checks that
// Run returns the context's error.
func run(t *testing.T, c *Client) {
	t.Helper()
	tr := &http.Transport{}
	c.HTTPClient = &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		tr.CloseIdleConnections()
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func echoThrough(t *testing.T, h *hub.Hub) {
	t.Helper()
	s, ok := h.Lookup("home")
	if !ok {
		t.Fatal("gateway not registered")
	}
	st, err := s.Open(context.Background(), tunnel.Meta{Gateway: "home"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	go func() {
		st.Write([]byte("ping"))
		st.CloseWrite()
	}()
	if got, err := io.ReadAll(st); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v", got, err)
	}
}

func fastBackoff() Backoff {
	return Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5, ResetAfter: time.Hour}
}

func TestConnectServeAndState(t *testing.T) {
	cloud := startCloud(t, "127.0.0.1:0")
	c := &Client{
		URL: cloud.url(), Name: "home", Token: "tok", Handler: echoHandler,
		Backoff: fastBackoff(),
		// The dial and handshake timeout must not bound the session.
		Config: tunnel.Config{HandshakeTimeout: 200 * time.Millisecond},
	}
	before := time.Now()
	run(t, c)
	waitFor(t, "connection", func() bool { return c.State().Connected && cloud.hub.Len() == 1 })
	st := c.State()
	if st.Since.Before(before) || st.LastError != nil || st.Failures != 0 {
		t.Fatalf("state %+v", st)
	}
	waitFor(t, "an RTT", func() bool { return c.State().RTT > 0 })
	time.Sleep(400 * time.Millisecond)
	if !c.State().Connected {
		t.Fatalf("session ended after the handshake timeout: %v", c.State().LastError)
	}
	echoThrough(t, cloud.hub)

	if err := c.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run: %v", err)
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	cloud := startCloud(t, "127.0.0.1:0")
	c := &Client{URL: cloud.url(), Name: "home", Token: "tok", Handler: echoHandler, Backoff: fastBackoff()}
	run(t, c)
	waitFor(t, "first connection", func() bool { return c.State().Connected && cloud.hub.Len() == 1 })
	echoThrough(t, cloud.hub)

	cloud.stop()
	waitFor(t, "disconnection", func() bool { return !c.State().Connected })
	// While the cloud is down, attempts fail, are counted, and say why.
	waitFor(t, "failed attempts", func() bool { return c.State().Failures >= 2 })
	if err := c.State().LastError; err == nil || !strings.Contains(err.Error(), "dial") {
		t.Fatalf("LastError %v, want the failed dial", err)
	}

	again := startCloud(t, cloud.addr)
	waitFor(t, "reconnection", func() bool { return c.State().Connected })
	waitFor(t, "registration", func() bool { return again.hub.Len() == 1 })
	echoThrough(t, again.hub)
	if f := c.State().Failures; f != 0 {
		t.Fatalf("failures %d after reconnecting", f)
	}
}

func TestRefusedHandshakeIsLastError(t *testing.T) {
	cloud := startCloud(t, "127.0.0.1:0")
	c := &Client{URL: cloud.url(), Name: "home", Token: "wrong", Handler: echoHandler, Backoff: fastBackoff()}
	run(t, c)
	waitFor(t, "two refusals", func() bool { return c.State().Failures >= 2 })
	st := c.State()
	var re *tunnel.RefusedError
	if st.Connected || !errors.As(st.LastError, &re) || re.Reason != "unknown gateway or token" {
		t.Fatalf("state %+v, want a refusal as LastError", st)
	}
	if strings.Contains(st.LastError.Error(), "wrong") {
		t.Fatal("token in the error")
	}
}

func TestHandlerStreamsSurviveUntilDone(t *testing.T) {
	cloud := startCloud(t, "127.0.0.1:0")
	var mu sync.Mutex
	var seen []tunnel.Initiator
	c := &Client{URL: cloud.url(), Name: "home", Token: "tok", Backoff: fastBackoff(),
		Handler: func(st *tunnel.Stream) {
			mu.Lock()
			seen = append(seen, st.Initiator())
			mu.Unlock()
			echoHandler(st)
		}}
	run(t, c)
	waitFor(t, "connection", func() bool { return cloud.hub.Len() == 1 })
	for range 3 {
		echoThrough(t, cloud.hub)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || seen[0].Gatename != "home" {
		t.Fatalf("handler saw %+v", seen)
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, c := range []*Client{
		{Name: "a", Token: "b", Handler: echoHandler},
		{URL: "ws://x", Token: "b", Handler: echoHandler},
		{URL: "ws://x", Name: "a", Token: "b"},
		{URL: "ws://x", Name: "a", Token: "b", Handler: echoHandler, Config: tunnel.Config{MaxStreams: -1}},
	} {
		if err := c.Run(context.Background()); err == nil {
			t.Errorf("Run accepted %+v", c)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.3}
	for attempt := range 70 {
		base := b.Min
		for range attempt {
			base = min(2*base, b.Max)
		}
		lo := time.Duration(float64(base) * (1 - b.Jitter))
		var sawLow, sawHigh bool
		for range 2000 {
			d := b.Delay(attempt)
			if d < lo || d > base {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, lo, base)
			}
			sawLow = sawLow || d < lo+(base-lo)/4
			sawHigh = sawHigh || d > base-(base-lo)/4
		}
		if !sawLow || !sawHigh {
			t.Fatalf("attempt %d: delays not spread over [%v, %v]", attempt, lo, base)
		}
	}
	// Zero fields take the defaults.
	def := DefaultBackoff()
	for range 1000 {
		if d := (Backoff{}).Delay(0); d < def.Min/2 || d > def.Min {
			t.Fatalf("default first delay %v", d)
		}
		if d := (Backoff{}).Delay(1000); d < def.Max/2 || d > def.Max {
			t.Fatalf("default capped delay %v", d)
		}
	}
	if !b.healthy(time.Minute) || b.healthy(59*time.Second) {
		t.Fatal("ResetAfter default is not one minute")
	}
}

// A session that lasted ResetAfter starts the delays over: reconnecting after
// a healthy session is quick even after many failures.
func TestBackoffResetAfterHealthySession(t *testing.T) {
	cloud := startCloud(t, "127.0.0.1:0")
	c := &Client{URL: cloud.url(), Name: "home", Token: "tok", Handler: echoHandler,
		Backoff: Backoff{Min: 10 * time.Millisecond, Max: 10 * time.Second, ResetAfter: 50 * time.Millisecond}}
	run(t, c)
	waitFor(t, "connection", func() bool { return cloud.hub.Len() == 1 })
	time.Sleep(100 * time.Millisecond) // healthy
	start := time.Now()
	cloud.hub.Drop("home", "testing")
	waitFor(t, "reconnection", func() bool {
		s, ok := cloud.hub.Lookup("home")
		return ok && s.Err() == nil && c.State().Connected
	})
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("reconnected after %v; the backoff was not reset", d)
	}
	if err := c.State().LastError; err == nil || !strings.Contains(err.Error(), "testing") {
		t.Fatalf("LastError %v", err)
	}
}
