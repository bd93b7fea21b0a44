package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var tokens = map[string]string{"home": "tok-home", "office": "tok-office"}

func authenticate(_ context.Context, name, key string) error {
	if tok, ok := tokens[name]; !ok || tok != key {
		return &tunnel.RefusedError{Reason: "unknown gateway or token"}
	}
	return nil
}

// cloud runs a Hub behind an httptest server. Cleanup closes the hub before
// the server, since ServeTunnel blocks while its session lives.
func cloud(t *testing.T, h *Hub) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeTunnel(w, r, authenticate, tunnel.Config{})
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { h.Close() })
	return srv.URL
}

// agent dials the hub, handshakes and returns the agent's session, which
// echoes every stream the cloud opens. Cleanup closes it.
func agent(t *testing.T, url, name, key string) (*tunnel.Session, error) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		return nil, err
	}
	conn := tunnel.WebSocketConn(c)
	if err := tunnel.ClientHandshake(ctx, conn, name, key); err != nil {
		conn.Close()
		return nil, err
	}
	s, err := tunnel.NewSession(conn, tunnel.Config{})
	if err != nil {
		conn.Close()
		return nil, err
	}
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
				st.Ack(true, "")
				io.Copy(st, st)
				st.CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		wg.Wait()
	})
	return s, nil
}

func waitEnded(t *testing.T, s *tunnel.Session) error {
	t.Helper()
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end")
		return nil
	}
}

// echoThrough opens a stream from the cloud's session of name and checks
// that the agent echoes.
func echoThrough(t *testing.T, h *Hub, name string) {
	t.Helper()
	s, ok := h.Lookup(name)
	if !ok {
		t.Fatalf("no session for %q", name)
	}
	st, err := s.Open(context.Background(), tunnel.Meta{Gateway: name, Client: netip.MustParseAddrPort("192.0.2.1:1234")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	go func() {
		st.Write([]byte("hello " + name))
		st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "hello "+name {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

func TestServeRegisterLookup(t *testing.T) {
	h := &Hub{}
	url := cloud(t, h)
	if _, err := agent(t, url, "home", "tok-home"); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "registration", func() bool { return h.Len() == 1 })
	echoThrough(t, h, "home")
	// Names are case-insensitive, like DNS.
	if _, ok := h.Lookup("HOME"); !ok {
		t.Fatal("Lookup is case-sensitive")
	}
	if _, ok := h.Lookup("office"); ok {
		t.Fatal("Lookup found a gateway that never connected")
	}
	if got := h.Names(); len(got) != 1 || got[0] != "home" {
		t.Fatalf("Names() = %v", got)
	}
}

func TestRefusedHandshake(t *testing.T) {
	h := &Hub{}
	url := cloud(t, h)
	_, err := agent(t, url, "home", "wrong")
	var re *tunnel.RefusedError
	if !errors.As(err, &re) || re.Reason != "unknown gateway or token" {
		t.Fatalf("agent error %v", err)
	}
	testtools.Eventually(t, 10*time.Second, "refusal count", func() bool { return h.Stats().Refused == 1 })
	if h.Len() != 0 {
		t.Fatal("refused agent registered")
	}
}

func TestNewerSessionReplacesOlder(t *testing.T) {
	h := &Hub{}
	url := cloud(t, h)
	first, err := agent(t, url, "home", "tok-home")
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "first registration", func() bool { return h.Stats().Registered == 1 })
	older, _ := h.Lookup("home")

	second, err := agent(t, url, "home", "tok-home")
	if err != nil {
		t.Fatal(err)
	}
	err = waitEnded(t, first)
	if !errors.Is(err, tunnel.ErrClosedByPeer) || !strings.Contains(err.Error(), ReasonReplaced) {
		t.Fatalf("older agent session ended with %v", err)
	}
	testtools.Eventually(t, 10*time.Second, "replacement", func() bool {
		s, ok := h.Lookup("home")
		return ok && s != older
	})
	if second.Err() != nil {
		t.Fatalf("newer session closed: %v", second.Err())
	}
	echoThrough(t, h, "home")
	testtools.Eventually(t, 10*time.Second, "stats", func() bool {
		st := h.Stats()
		return st.Live == 1 && st.Registered == 2 && st.Replaced == 1 && st.Ended == 1
	})
}

func TestDrop(t *testing.T) {
	h := &Hub{}
	url := cloud(t, h)
	s, err := agent(t, url, "home", "tok-home")
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "registration", func() bool { return h.Len() == 1 })
	if !h.Drop("home", "gateway expired") {
		t.Fatal("Drop found nothing")
	}
	if h.Drop("home", "again") {
		t.Fatal("second Drop found a session")
	}
	if err := waitEnded(t, s); !strings.Contains(err.Error(), "gateway expired") {
		t.Fatalf("agent session ended with %v", err)
	}
	if _, ok := h.Lookup("home"); ok {
		t.Fatal("dropped session still found")
	}
	if st := h.Stats(); st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSessionEndRemoves(t *testing.T) {
	h := &Hub{}
	url := cloud(t, h)
	s, err := agent(t, url, "office", "tok-office")
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "registration", func() bool { return h.Len() == 1 })
	s.Close()
	testtools.Eventually(t, 10*time.Second, "removal", func() bool { return h.Len() == 0 })
	if st := h.Stats(); st.Ended != 1 || st.Live != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStreamsFromAgents(t *testing.T) {
	t.Run("refused without handler", func(t *testing.T) {
		h := &Hub{}
		s, err := agent(t, cloud(t, h), "home", "tok-home")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Open(context.Background(), tunnel.Initiator{Gatename: "office", Ip: "10.0.0.5", Port: 22})
		if !errors.Is(err, tunnel.ErrRefused) {
			t.Fatalf("Open toward the cloud: %v", err)
		}
	})
	t.Run("handled", func(t *testing.T) {
		from := make(chan tunnel.Meta, 1)
		h := &Hub{}
		h.SetHandler(func(m tunnel.Meta, st *tunnel.Stream) {
			from <- m
			st.Ack(true, "")
			io.Copy(st, st)
			st.CloseWrite()
		})
		s, err := agent(t, cloud(t, h), "home", "tok-home")
		if err != nil {
			t.Fatal(err)
		}
		// The agent claims a client address of its choosing: the hub must
		// put the address it saw the agent connect from in its place.
		st, err := s.Open(context.Background(), tunnel.Initiator{Gatename: "office", Ip: "10.0.0.5", Port: 22, ClientAddr: "203.0.113.66:6666"})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.Write([]byte("x"))
		st.CloseWrite()
		if got, err := io.ReadAll(st); err != nil || string(got) != "x" {
			t.Fatalf("%q %v", got, err)
		}
		m := <-from
		if m.Source != "home" || m.Gateway != "office" || m.Dest != netip.MustParseAddrPort("10.0.0.5:22") {
			t.Fatalf("handler saw %+v", m)
		}
		if !m.Client.Addr().IsLoopback() || m.Client.Port() == 6666 {
			t.Fatalf("client address %v: not the agent's own loopback address", m.Client)
		}
	})
}

func TestClose(t *testing.T) {
	h := &Hub{}
	url := cloud(t, h)
	s, err := agent(t, url, "home", "tok-home")
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "registration", func() bool { return h.Len() == 1 })
	h.Close()
	if err := waitEnded(t, s); !strings.Contains(err.Error(), ReasonShutdown) {
		t.Fatalf("agent session ended with %v", err)
	}
	if _, err := agent(t, url, "home", "tok-home"); err == nil {
		t.Fatal("connected to a closed hub")
	}
	if err := h.Register("home", NewWebSocketTunnel(s, netip.AddrPort{})); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after Close: %v", err)
	}
}

// The hub counts tunnels per kind, for the metrics of each kind.
func TestStatsPerKind(t *testing.T) {
	h := &Hub{}
	s, err := agent(t, cloud(t, h), "home", "tok-home")
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "registration", func() bool { return h.Len() == 1 })
	if k := h.Stats().Kinds[KindWebSocket]; k.Live != 1 || k.Registered != 1 {
		t.Fatalf("websocket stats %+v", k)
	}
	s.Close()
	testtools.Eventually(t, 10*time.Second, "removal", func() bool { return h.Len() == 0 })
	if k := h.Stats().Kinds[KindWebSocket]; k.Live != 0 || k.Registered != 1 {
		t.Fatalf("websocket stats after the end %+v", k)
	}
}

// RegisterUnless keeps a live tunnel that keep chooses, and replaces one it
// does not choose, as Register does.
func TestRegisterUnless(t *testing.T) {
	h := &Hub{}
	url := cloud(t, h)
	s1, err := agent(t, url, "home", "tok-home")
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "registration", func() bool { return h.Len() == 1 })
	live, _ := h.Lookup("home")

	// A second session, dialled to get a real tunnel, then offered under
	// another name through RegisterUnless.
	s2, err := agent(t, url, "office", "tok-office")
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "second registration", func() bool { return h.Len() == 2 })
	other, _ := h.Lookup("office")

	var asked Tunnel
	err = h.RegisterUnless("HOME", other, func(old Tunnel) bool { asked = old; return true })
	if !errors.Is(err, ErrLive) || asked != live {
		t.Fatalf("RegisterUnless kept? %v (asked about %v)", err, asked)
	}
	if got, _ := h.Lookup("home"); got != live || s1.Err() != nil || other.Err() != nil {
		t.Fatal("the kept tunnel changed or a tunnel was closed")
	}
	if err := h.RegisterUnless("home", other, func(Tunnel) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if err := waitEnded(t, s1); !strings.Contains(err.Error(), ReasonReplaced) {
		t.Fatalf("the replaced session ended with %v", err)
	}
	if got, _ := h.Lookup("home"); got != other || s2.Err() != nil {
		t.Fatal("not replaced")
	}
}

// Observe hears the names already live, then every gain and loss in
// order; a replacement by a newer session is no loss, and a session
// that ends after being replaced says nothing.
func TestObserve(t *testing.T) {
	h := &Hub{}
	url := cloud(t, h)
	if _, err := agent(t, url, "office", "tok-office"); err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "registration", func() bool { return h.Len() == 1 })
	var mu sync.Mutex
	var got []string
	h.Observe(func(name string, live bool) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprintf("%s=%v", name, live))
	})
	seen := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(got, " ")
	}
	first, err := agent(t, url, "home", "tok-home")
	if err != nil {
		t.Fatal(err)
	}
	testtools.Eventually(t, 10*time.Second, "home registered", func() bool { return h.Len() == 2 })
	if _, err := agent(t, url, "home", "tok-home"); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, first)
	testtools.Eventually(t, 10*time.Second, "the replacement", func() bool { return h.Stats().Ended == 1 })
	h.Drop("office", "gateway expired")
	testtools.Eventually(t, 10*time.Second, "the drop", func() bool { return h.Len() == 1 })
	if want := "office=true home=true home=true office=false"; seen() != want {
		t.Fatalf("observed %q, want %q", seen(), want)
	}
	h.Observe(nil)
	h.Drop("home", "gone")
	if want := "office=true home=true home=true office=false"; seen() != want {
		t.Fatalf("observed %q after Observe(nil), want %q", seen(), want)
	}
}

// TestAgentTransports: an agent of this version reaches the hub over the
// raw transport, one that offers only the WebSocket (as agents before it
// did) over a WebSocket; both carry streams.
func TestAgentTransports(t *testing.T) {
	for _, tc := range []struct {
		websocketOnly bool
		want          string
	}{{false, tunnel.RawUpgrade}, {true, tunnel.TransportWebSocket}} {
		t.Run(tc.want, func(t *testing.T) {
			h := &Hub{}
			url := cloud(t, h)
			cl := &client.Client{
				URL: "ws" + url[len("http"):], Name: "home", Token: "tok-home",
				WebSocketOnly: tc.websocketOnly,
				Handler: func(st *tunnel.Stream) {
					st.Ack(true, "")
					io.Copy(st, st)
					st.CloseWrite()
				},
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				cl.Run(ctx)
			}()
			t.Cleanup(func() {
				cancel()
				<-done
			})
			testtools.Eventually(t, 10*time.Second, "registration", func() bool { return h.Len() == 1 })
			echoThrough(t, h, "home")
			if got := cl.State().Transport; got != tc.want {
				t.Fatalf("transport %q, want %q", got, tc.want)
			}
		})
	}
}
