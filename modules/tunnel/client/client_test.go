package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
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
	testtools.Eventually(t, 15*time.Second, "connection", func() bool { return c.State().Connected && cloud.hub.Len() == 1 })
	st := c.State()
	if st.Since.Before(before) || st.LastError != nil || st.Failures != 0 {
		t.Fatalf("state %+v", st)
	}
	testtools.Eventually(t, 15*time.Second, "an RTT", func() bool { return c.State().RTT > 0 })
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
	testtools.Eventually(t, 15*time.Second, "first connection", func() bool { return c.State().Connected && cloud.hub.Len() == 1 })
	echoThrough(t, cloud.hub)

	cloud.stop()
	testtools.Eventually(t, 15*time.Second, "disconnection", func() bool { return !c.State().Connected })
	// While the cloud is down, attempts fail, are counted, and say why.
	testtools.Eventually(t, 15*time.Second, "failed attempts", func() bool { return c.State().Failures >= 2 })
	if err := c.State().LastError; err == nil || !strings.Contains(err.Error(), "dial") {
		t.Fatalf("LastError %v, want the failed dial", err)
	}

	again := startCloud(t, cloud.addr)
	testtools.Eventually(t, 15*time.Second, "reconnection", func() bool { return c.State().Connected })
	testtools.Eventually(t, 15*time.Second, "registration", func() bool { return again.hub.Len() == 1 })
	echoThrough(t, again.hub)
	if f := c.State().Failures; f != 0 {
		t.Fatalf("failures %d after reconnecting", f)
	}
}

func TestRefusedHandshakeIsLastError(t *testing.T) {
	cloud := startCloud(t, "127.0.0.1:0")
	c := &Client{URL: cloud.url(), Name: "home", Token: "wrong", Handler: echoHandler, Backoff: fastBackoff()}
	run(t, c)
	testtools.Eventually(t, 15*time.Second, "two refusals", func() bool { return c.State().Failures >= 2 })
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
	testtools.Eventually(t, 15*time.Second, "connection", func() bool { return cloud.hub.Len() == 1 })
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
	testtools.Eventually(t, 15*time.Second, "connection", func() bool { return cloud.hub.Len() == 1 })
	time.Sleep(100 * time.Millisecond) // healthy
	start := time.Now()
	cloud.hub.Drop("home", "testing")
	testtools.Eventually(t, 15*time.Second, "reconnection", func() bool {
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

// The attack of issue 14 (item 10): the cloud goes away for longer than the
// first steps of the backoff, then comes back. Without probing, the client
// sleeps out a delay that grew during the outage (here 1 s, 2 s, 4 s: the
// attempt after a 4 s outage comes about 3 s after the cloud is back); with
// it, the client reconnects within the probe interval and the reconnect
// jitter, well under 2 s.
func TestReconnectSoonAfterCloudReturns(t *testing.T) {
	cloud := startCloud(t, "127.0.0.1:0")
	c := &Client{URL: cloud.url(), Name: "home", Token: "tok", Handler: echoHandler,
		// Jitter is the smallest allowed, so the delays are as long as
		// the backoff makes them and the test fails on a client that
		// only backs off (ProbeInterval -1: 2.9 s).
		Backoff: Backoff{Min: time.Second, Max: time.Minute, Jitter: 0.01, ResetAfter: time.Hour}}
	run(t, c)
	testtools.Eventually(t, 15*time.Second, "first connection", func() bool { return c.State().Connected && cloud.hub.Len() == 1 })

	cloud.stop()
	testtools.Eventually(t, 15*time.Second, "disconnection", func() bool { return !c.State().Connected })
	time.Sleep(4 * time.Second)
	if f := c.State().Failures; f < 2 {
		t.Fatalf("%d failures during the outage, want the backoff past its first steps", f)
	}

	again := startCloud(t, cloud.addr)
	back := time.Now()
	testtools.Eventually(t, 15*time.Second, "reconnection", func() bool { return c.State().Connected && again.hub.Len() == 1 })
	if d := time.Since(back); d > 2*time.Second {
		t.Fatalf("reconnected %v after the cloud came back, want under 2s", d)
	}
	echoThrough(t, again.hub)
}

// A cloud that answers but refuses the agent never looks like a cloud
// coming back: the probes all succeed and the delays keep growing.
func TestProbeDoesNotShortenRefusals(t *testing.T) {
	cloud := startCloud(t, "127.0.0.1:0")
	c := &Client{URL: cloud.url(), Name: "home", Token: "wrong", Handler: echoHandler,
		Backoff: Backoff{Min: 400 * time.Millisecond, Max: time.Minute, Jitter: 0.01, ResetAfter: time.Hour,
			ProbeInterval: 20 * time.Millisecond, ReconnectJitter: time.Millisecond}}
	run(t, c)
	// Attempts at about 0, 0.4, 1.2, 2.8 s: three failures in 2.5 s at most.
	time.Sleep(2500 * time.Millisecond)
	if f := c.State().Failures; f < 2 || f > 3 {
		t.Fatalf("%d refused attempts in 2.5s, want the backoff's 2 or 3", f)
	}
}

func TestReconnectPauseSpread(t *testing.T) {
	b := Backoff{ReconnectJitter: 100 * time.Millisecond}
	var low, high bool
	for range 1000 {
		d := b.reconnectPause()
		if d < 0 || d >= 100*time.Millisecond {
			t.Fatalf("pause %v outside [0, 100ms)", d)
		}
		low = low || d < 25*time.Millisecond
		high = high || d > 75*time.Millisecond
	}
	if !low || !high {
		t.Fatal("reconnect pauses not spread")
	}
}

func TestProbeTarget(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"wss://api.box.example.org/v1/tunnel", "api.box.example.org:443"},
		{"ws://127.0.0.1/v1/tunnel", "127.0.0.1:80"},
		{"wss://[::1]:8443/v1/tunnel", "[::1]:8443"},
		{"::bad", ""},
	} {
		c := &Client{URL: tt.url, HTTPClient: &http.Client{Transport: &http.Transport{}}}
		if got, _ := c.probeTarget(); got != tt.want {
			t.Errorf("%s: probe target %q, want %q", tt.url, got, tt.want)
		}
	}
	proxied := &Client{URL: "wss://api.box.example.org/v1/tunnel", HTTPClient: &http.Client{Transport: &http.Transport{
		Proxy: func(*http.Request) (*url.URL, error) { return url.Parse("http://proxy:3128") }}}}
	if got, _ := proxied.probeTarget(); got != "" {
		t.Errorf("behind a proxy, probe target %q, want none", got)
	}
}

// startVersion1Cloud is a cloud as deployed before protocol version 2: it
// refuses any other version with the words it used, and forwards name a
// stream's source in Gatename.
func startVersion1Cloud(t *testing.T) (url string, sessions chan *tunnel.Session, versions chan uint16) {
	t.Helper()
	sessions = make(chan *tunnel.Session, 4)
	versions = make(chan uint16, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		conn := tunnel.WebSocketConn(wc)
		b, err := conn.ReadMessage(r.Context())
		if err != nil {
			conn.Close()
			return
		}
		m, err := tunnel.Decode(b)
		h, ok := m.(tunnel.Handshake)
		if err != nil || !ok {
			conn.Close()
			return
		}
		versions <- h.Version
		ack := tunnel.Ack{Ok: true}
		if h.Version != 1 {
			ack = tunnel.Ack{Message: fmt.Sprintf("unsupported protocol version %d (server speaks 1)", h.Version)}
		}
		b, _ = tunnel.Encode(ack)
		_ = conn.WriteMessage(r.Context(), b)
		if !ack.Ok {
			conn.Close()
			return
		}
		s, err := tunnel.NewSession(conn, tunnel.Config{})
		if err != nil {
			return
		}
		sessions <- s
		<-s.Done()
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http"), sessions, versions
}

// An agent of this version still connects to a cloud that predates it, and
// reads the source of a forward that cloud names in Gatename.
func TestConnectToVersion1Cloud(t *testing.T) {
	url, sessions, versions := startVersion1Cloud(t)
	seen := make(chan tunnel.Meta, 1)
	c := &Client{URL: url, Name: "home", Token: "tok", Backoff: fastBackoff(), Handler: func(st *tunnel.Stream) {
		seen <- tunnel.MetaFromInitiator(st.Initiator())
		_ = st.Ack(false, "just looking")
	}}
	run(t, c)
	var s *tunnel.Session
	select {
	case s = <-sessions:
	case <-time.After(10 * time.Second):
		t.Fatal("no session with the version 1 cloud")
	}
	defer s.Close()
	// The agent steps down one version per refusal until the cloud takes it.
	for want := uint16(tunnel.ProtocolVersion); want >= tunnel.MinProtocolVersion; want-- {
		if v := <-versions; v != want {
			t.Fatalf("announced version %d, want %d", v, want)
		}
	}
	// How a version 1 cloud opened a forward's target leg.
	_, err := s.Open(context.Background(), tunnel.Initiator{Gatename: "gw2", Ip: "10.0.0.2", Port: 22})
	var re *tunnel.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("Open: %v", err)
	}
	if m := <-seen; m.Source != "gw2" || !m.Forwarded() {
		t.Fatalf("agent read %+v", m)
	}
}
