package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// echoed is what the echo upstream saw.
type echoed struct {
	Host   string      `json:"host"`
	Proto  string      `json:"proto"`
	Header http.Header `json:"header"`
}

// echoApp answers every request with what it saw, echoes WebSocket
// messages on /ws, and sends server-sent events on /events: the first at
// once, the next only once the test says the first arrived (next), which
// only works if nothing on the way buffers.
func echoApp(t *testing.T, next <-chan struct{}) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "+r.Host+": "), b...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Second):
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Host: r.Host, Proto: r.Proto, Header: r.Header})
	})
	return mux
}

// agentFor starts a proxy Server for up with cfg's other fields and
// returns it and the cloud's side of a tunnel session whose agent side it
// serves.
func agentFor(t *testing.T, up string, cfg Config) (*Server, *tunnel.Session, *x509.CertPool) {
	t.Helper()
	s, cloud, pool, _ := countedAgentFor(t, up, cfg)
	return s, cloud, pool
}

// countedAgentFor is agentFor, and also returns the count of Data frames
// the agent's session sends.
func countedAgentFor(t testing.TB, up string, cfg Config) (*Server, *tunnel.Session, *x509.CertPool, *atomic.Int64) {
	t.Helper()
	u, err := url.Parse(up)
	if err != nil {
		t.Fatal(err)
	}
	cert, pool := selfSigned(t)
	cfg.Upstream = u
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cloud, frames := countedSessions(t, s.HandleStream)
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s, cloud, pool, frames
}

// visitor is an HTTP client whose every connection is a new tunnel stream
// from clientAddr, as the cloud opens them for an internet visitor; h2
// offers HTTP/2 in ALPN as browsers do.
func visitor(t testing.TB, cloud *tunnel.Session, pool *x509.CertPool, clientAddr string, h2 bool) *http.Client {
	tr := &http.Transport{
		ForceAttemptHTTP2: h2,
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			st, err := cloud.Open(ctx, tunnel.Initiator{Gatename: "home", ClientAddr: clientAddr})
			if err != nil {
				return nil, err
			}
			protos := []string{"http/1.1"}
			if h2 {
				protos = []string{"h2", "http/1.1"}
			}
			// The test certificate names example.com: the Host header
			// is what these tests are about, not the certificate.
			tc := tls.Client(st, &tls.Config{RootCAs: pool, ServerName: "example.com", NextProtos: protos})
			if err := tc.HandshakeContext(ctx); err != nil {
				st.Close()
				return nil, err
			}
			return tc, nil
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

func getEcho(t *testing.T, hc *http.Client, req *http.Request) (echoed, *http.Response) {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e echoed
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("%s: %v", resp.Status, err)
	}
	return e, resp
}

// The app sees the name the visitor asked for, the forwarding headers the
// agent sets and nothing the visitor forged; HTTP/2 reaches the visitor.
func TestTheAppSeesTheRequestedHost(t *testing.T) {
	app := httptest.NewServer(echoApp(t, nil))
	defer app.Close()
	appHost := strings.TrimPrefix(app.URL, "http://")
	for _, tc := range []struct {
		name, host, upstreamHost, want string
		forwarded                      bool
	}{
		{name: "tunnel name", host: "home.box.test", want: "home.box.test"},
		{name: "tunnel name with port", host: "home.box.test:18443", want: "home.box.test:18443"},
		{name: "local name", host: "local.home.box.test:8443", want: "local.home.box.test:8443", forwarded: true},
		{name: "upstream_host placeholder", host: "home.box.test", upstreamHost: UpstreamHostPort, want: appHost},
		{name: "upstream_host literal", host: "home.box.test", upstreamHost: "app.internal:8080", want: "app.internal:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cloud, pool := agentFor(t, app.URL, Config{UpstreamHost: tc.upstreamHost, Forwarded: tc.forwarded})
			hc := visitor(t, cloud, pool, "203.0.113.5:4444", true)
			req, _ := http.NewRequest("GET", "https://"+tc.host+"/x", nil)
			req.Header.Set("X-Forwarded-For", "6.6.6.6")
			req.Header.Set("X-Forwarded-Host", "evil.example")
			req.Header.Set("X-Forwarded-Proto", "http")
			req.Header.Set("Forwarded", "for=6.6.6.6")
			req.Header.Set("X-Real-Ip", "6.6.6.6")
			req.Header.Set("X-App", "kept")
			e, resp := getEcho(t, hc, req)
			if resp.ProtoMajor != 2 {
				t.Errorf("visitor got %s, want HTTP/2", resp.Proto)
			}
			h := e.Header
			if e.Host != tc.want {
				t.Errorf("Host %q, want %q", e.Host, tc.want)
			}
			if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "203.0.113.5" {
				t.Errorf("X-Forwarded-For %q", got)
			}
			if h.Get("X-Forwarded-Host") != tc.host || h.Get("X-Forwarded-Proto") != "https" {
				t.Errorf("X-Forwarded-Host %q, -Proto %q", h.Get("X-Forwarded-Host"), h.Get("X-Forwarded-Proto"))
			}
			wantFwd := ""
			if tc.forwarded {
				wantFwd = `for=203.0.113.5;host="` + tc.host + `";proto=https`
			}
			if h.Get("Forwarded") != wantFwd {
				t.Errorf("Forwarded %q, want %q", h.Get("Forwarded"), wantFwd)
			}
			if h.Get("X-Real-Ip") != "" || h.Get("X-App") != "kept" {
				t.Errorf("X-Real-Ip %q (forged, must go), X-App %q", h.Get("X-Real-Ip"), h.Get("X-App"))
			}
		})
	}
}

// Hop-by-hop headers, including those the client names in Connection,
// stop at the agent.
func TestHopByHopHeadersAreStripped(t *testing.T) {
	app := httptest.NewServer(echoApp(t, nil))
	defer app.Close()
	_, cloud, pool := agentFor(t, app.URL, Config{})
	hc := visitor(t, cloud, pool, "203.0.113.5:4444", false)
	req, _ := http.NewRequest("GET", "https://home.box.test/", nil)
	req.Header.Set("Connection", "X-Secret, keep-alive")
	req.Header.Set("X-Secret", "for the agent only")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Keep-Alive", "timeout=5")
	e, _ := getEcho(t, hc, req)
	for _, k := range []string{"X-Secret", "Proxy-Authorization", "Keep-Alive"} {
		if v := e.Header.Get(k); v != "" {
			t.Errorf("%s reached the app: %q", k, v)
		}
	}
	if e.Host != "home.box.test" || e.Proto != "HTTP/1.1" {
		t.Errorf("host %q proto %q", e.Host, e.Proto)
	}
}

// A WebSocket through the tunnel keeps its Host, and server-sent events
// arrive one by one while the app is still sending (nothing buffers).
func TestWebSocketAndEventsThroughTheTunnel(t *testing.T) {
	next := make(chan struct{})
	app := httptest.NewServer(echoApp(t, next))
	defer app.Close()
	_, cloud, pool := agentFor(t, app.URL, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	ws, _, err := websocket.Dial(ctx, "wss://home.box.test/ws", &websocket.DialOptions{HTTPClient: visitor(t, cloud, pool, "203.0.113.5:1", false)})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	defer ws.CloseNow()
	for i := range 3 {
		msg := fmt.Sprintf("ping %d", i)
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := ws.Read(ctx)
		if err != nil || string(b) != "echo: home.box.test: "+msg {
			t.Fatalf("websocket answer %q %v", b, err)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")

	for _, h2 := range []bool{false, true} {
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://home.box.test/events", nil)
		resp, err := visitor(t, cloud, pool, "203.0.113.5:2", h2).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Type") != "text/event-stream" || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
			t.Fatalf("events: %s %s", resp.Proto, resp.Header.Get("Content-Type"))
		}
		br := bufio.NewReader(resp.Body)
		for i := range 3 {
			line, err := br.ReadString('\n')
			if err != nil || line != fmt.Sprintf("data: event %d\n", i) {
				t.Fatalf("event %d (h2 %v): %q %v", i, h2, line, err)
			}
			_, _ = br.ReadString('\n')
			if i < 2 {
				// The app sends the next event only now.
				select {
				case next <- struct{}{}:
				case <-ctx.Done():
					t.Fatal("the app is not waiting")
				}
			}
		}
		resp.Body.Close()
	}
}

// An https:// upstream with a self-signed certificate: trusted through its
// own CA or with verification off, refused otherwise (the visitor sees
// 502, the owner why).
func TestHTTPSUpstream(t *testing.T) {
	app := httptest.NewTLSServer(echoApp(t, nil))
	defer app.Close()
	appCA := x509.NewCertPool()
	appCA.AddCert(app.Certificate())
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		ok   bool
	}{
		{"own CA", &tls.Config{RootCAs: appCA}, true},
		{"insecure_skip_verify", &tls.Config{InsecureSkipVerify: true}, true},
		{"system roots", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, cloud, pool := agentFor(t, app.URL, Config{UpstreamTLS: tc.tls})
			hc := visitor(t, cloud, pool, "203.0.113.5:4444", true)
			req, _ := http.NewRequest("GET", "https://home.box.test/", nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !tc.ok {
				if resp.StatusCode != http.StatusBadGateway || strings.Contains(string(b), "certificate") {
					t.Fatalf("untrusted upstream: %s %s", resp.Status, b)
				}
				if h := s.Health(); h.Healthy || !strings.Contains(h.LastError, "certificate") {
					t.Fatalf("health: %+v", h)
				}
				return
			}
			var e echoed
			if err := json.Unmarshal(b, &e); err != nil || e.Host != "home.box.test" || e.Header.Get("X-Forwarded-Proto") != "https" {
				t.Fatalf("%s: %s (%v)", resp.Status, b, err)
			}
			if h := s.Health(); !h.Healthy {
				t.Fatalf("health: %+v", h)
			}
		})
		// The health check completes the TLS handshake, so it finds an
		// untrusted certificate without a visitor.
		t.Run(tc.name+" health check", func(t *testing.T) {
			s, _, _ := agentFor(t, app.URL, Config{UpstreamTLS: tc.tls})
			s.checkOnce(context.Background())
			if h := s.Health(); h.Healthy != tc.ok || !tc.ok && !strings.Contains(h.LastError, "certificate") {
				t.Fatalf("health: %+v", h)
			}
		})
	}
}

// A dead or slow app: the visitor gets a plain page, 502 or 504, with no
// internal address or error text; the owner gets both in the health.
func TestUpstreamFailuresShowNoInternalDetail(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	stall := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(stall)

	for _, tc := range []struct {
		name, up string
		code     int
	}{
		{"dead", "http://" + dead, http.StatusBadGateway},
		{"slow", slow.URL, http.StatusGatewayTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, cloud, pool := agentFor(t, tc.up, Config{ResponseTimeout: 300 * time.Millisecond})
			resp, err := visitor(t, cloud, pool, "203.0.113.5:4444", true).Get("https://home.box.test/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			page := string(b)
			if resp.StatusCode != tc.code || !strings.Contains(page, "web application") {
				t.Fatalf("%s: %s", resp.Status, page)
			}
			_, port, _ := net.SplitHostPort(strings.TrimPrefix(tc.up, "http://"))
			for _, leak := range []string{"127.0.0.1", port, "dial", "refused", "timeout", "awaiting", "http://"} {
				if strings.Contains(page, leak) {
					t.Errorf("the visitor's page shows %q:\n%s", leak, page)
				}
			}
			h := s.Health()
			if h.Healthy || !strings.Contains(h.LastError, port) || h.LastErrorAt.IsZero() {
				t.Fatalf("health for the owner: %+v", h)
			}
		})
	}
}

// The health checks find a dead app without a visitor, and see it back.
func TestHealthChecks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	s, _, _ := agentFor(t, "http://"+addr, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.RunHealthChecks(ctx, 20*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, cond func(Health) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond(s.Health()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", what, s.Health())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("healthy", func(h Health) bool { return h.Healthy })
	ln.Close()
	waitFor("unhealthy", func(h Health) bool { return !h.Healthy && strings.Contains(h.LastError, addr) })
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	defer ln2.Close()
	waitFor("healthy again", func(h Health) bool { return h.Healthy && strings.Contains(h.LastError, addr) })
}

func TestForwardedHeader(t *testing.T) {
	for _, tc := range []struct {
		remote, host string
		tls          bool
		want         string
	}{
		{"203.0.113.5:1", "home.box.test", true, "for=203.0.113.5;host=home.box.test;proto=https"},
		{"[2001:db8::1]:443", "home.box.test:8443", true, `for="[2001:db8::1]";host="home.box.test:8443";proto=https`},
		{"[::ffff:192.0.2.1]:1", "h", false, "for=192.0.2.1;host=h;proto=http"},
		{"tunnel-guid", "h", true, "for=unknown;host=h;proto=https"},
	} {
		r := &http.Request{RemoteAddr: tc.remote, Host: tc.host}
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := forwardedHeader(r); got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.remote, tc.host, got, tc.want)
		}
	}
}
