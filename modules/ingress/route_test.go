package ingress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

const zone = "zone.test"

// gatewayOf is the router's name mapping for zone: the label just above
// it, except the cloud's own "api".
func gatewayOf(sni string) (string, bool) {
	rest, ok := strings.CutSuffix(sni, "."+zone)
	if !ok {
		return "", false
	}
	name := rest[strings.LastIndexByte(rest, '.')+1:]
	return name, name != "api"
}

// fixture is a hub behind a WebSocket endpoint, a wrapped loopback
// listener routing into it, and the agents connected to it.
type fixture struct {
	t   *testing.T
	hub *hub.Hub
	url string
	ln  *Listener
	r   *Router
	m   *Prometheus
}

func newFixture(t *testing.T, peekTimeout time.Duration) *fixture {
	return newFixtureConfig(t, Config{PeekTimeout: peekTimeout})
}

// newFixtureConfig is newFixture with cfg's options; the zone, the name
// mapping, the tunnels, the metrics and a 5 s open timeout (unless set)
// are the fixture's.
func newFixtureConfig(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{t: t, hub: &hub.Hub{}, m: NewPrometheus()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hub.ServeTunnel(w, r, func(context.Context, string, string) error { return nil }, tunnel.Config{})
	}))
	f.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Zone, cfg.Gateway, cfg.Metrics = zone, gatewayOf, f.m
	cfg.Tunnels = f.hub
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = 5 * time.Second
	}
	if f.r, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	f.ln = NewListener(inner, f.r)
	// Cleanups run last-in first-out: the listener, then the sessions
	// (which ends the relays), then the endpoint.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { f.hub.Close() })
	t.Cleanup(func() { f.ln.Close() })
	return f
}

// agent connects a tunnel client for name whose streams go to handler,
// and waits until the hub has its session.
func (f *fixture) agent(name string, handler func(*tunnel.Stream)) {
	f.t.Helper()
	c := &client.Client{URL: f.url, Name: name, Token: "t", Handler: handler,
		Backoff: client.Backoff{Min: 50 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	f.t.Cleanup(func() { cancel(); <-done })
	testtools.Eventually(f.t, 10*time.Second, "the session of "+name, func() bool { _, ok := f.hub.Lookup(name); return ok })
}

func (f *fixture) dial() net.Conn {
	f.t.Helper()
	c, err := net.DialTimeout("tcp", f.ln.Addr().String(), 5*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// accept returns the next connection handed to "Caddy", within a deadline.
func (f *fixture) accept() net.Conn {
	f.t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := f.ln.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			f.t.Fatalf("accept: %v", r.err)
		}
		f.t.Cleanup(func() { r.c.Close() })
		_ = r.c.SetDeadline(time.Now().Add(20 * time.Second))
		return r.c
	case <-time.After(10 * time.Second):
		// Unblock the Accept above so it does not leak.
		f.ln.Close()
		f.t.Fatal("nothing reached Accept")
		return nil
	}
}

// selfSigned returns a certificate for names and a pool that trusts it.
func selfSigned(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := testcert.MustSelfSigned(t, testcert.Options{
		Serial:   big.NewInt(1),
		Subject:  pkix.Name{CommonName: names[0]},
		DNSNames: names,
		NotAfter: time.Now().Add(time.Hour),
	})
	return c.TLS(), c.Pool()
}

// tlsGateway serves one HTTP request per stream, terminating TLS itself
// with cert, as a gateway behind its tunnel does. It records the streams'
// Initiators.
func tlsGateway(cert tls.Certificate, body string, inits chan<- tunnel.Initiator) func(*tunnel.Stream) {
	return func(st *tunnel.Stream) {
		if err := st.Ack(true, ""); err != nil {
			return
		}
		if inits != nil {
			inits <- st.Initiator()
		}
		tc := tls.Server(st, &tls.Config{Certificates: []tls.Certificate{cert}})
		defer tc.Close()
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		req, err := http.ReadRequest(bufio.NewReader(tc))
		if err != nil {
			return
		}
		fmt.Fprintf(tc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s %s", len(body)+1+len(req.URL.Path), body, req.URL.Path)
	}
}

func TestRelaysGatewayTLSEndToEnd(t *testing.T) {
	f := newFixture(t, 0)
	alphaCert, alphaPool := selfSigned(t, "alpha.zone.test", "www.alpha.zone.test")
	betaCert, betaPool := selfSigned(t, "beta.zone.test")
	inits := make(chan tunnel.Initiator, 4)
	f.agent("alpha", tlsGateway(alphaCert, "alpha", inits))
	f.agent("beta", tlsGateway(betaCert, "beta", nil))

	get := func(sni string, pool *x509.CertPool) (string, *x509.Certificate) {
		t.Helper()
		tc := tls.Client(f.dial(), &tls.Config{ServerName: sni, RootCAs: pool})
		defer tc.Close()
		fmt.Fprintf(tc, "GET /page HTTP/1.1\r\nHost: %s\r\n\r\n", sni)
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatalf("%s: %v", sni, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b), tc.ConnectionState().PeerCertificates[0]
	}
	if body, cert := get("alpha.zone.test", alphaPool); body != "alpha /page" || cert.Subject.CommonName != "alpha.zone.test" {
		t.Fatalf("alpha: %q from %v", body, cert.Subject)
	}
	// A name below the gateway's goes to the gateway too.
	if body, _ := get("www.alpha.zone.test", alphaPool); body != "alpha /page" {
		t.Fatalf("www.alpha: %q", body)
	}
	if body, cert := get("beta.zone.test", betaPool); body != "beta /page" || cert.Subject.CommonName != "beta.zone.test" {
		t.Fatalf("beta: %q from %v", body, cert.Subject)
	}
	init := <-inits
	if init.Gatename != "alpha" || !strings.HasPrefix(init.ClientAddr, "127.0.0.1:") || init.Ip != "" || init.Port != 0 {
		t.Fatalf("initiator %+v", init)
	}
	if got := value(f.m.Opened); got != 3 {
		t.Fatalf("streams opened: %v", got)
	}
	testtools.Eventually(t, 10*time.Second, "relays to end", func() bool { return value(f.m.Active) == 0 })
	if up, down := value(f.m.ToGateway), value(f.m.ToClient); up < 300 || down < 300 {
		t.Fatalf("bytes relayed: to gateway %v, to client %v", up, down)
	}
}

// captureHello returns a real ClientHello for sni, as crypto/tls sends it.
func captureHello(t *testing.T, sni string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		defer a.Close()
		_ = tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// Each direction ends on its own: the client's EOF reaches the gateway
// while the gateway still answers, and the gateway's EOF reaches the
// client.
func TestRelayHalfClose(t *testing.T) {
	f := newFixture(t, 0)
	hello := captureHello(t, "echo.zone.test")
	f.agent("echo", func(st *tunnel.Stream) {
		_ = st.Ack(true, "")
		b, err := io.ReadAll(st) // up to the client's half-close
		if err != nil {
			return
		}
		fmt.Fprintf(st, "got %d bytes", len(b))
		_ = st.CloseWrite()
		_, _ = io.Copy(io.Discard, st)
	})
	c := f.dial()
	payload := bytes.Repeat([]byte("x"), 300<<10) // above a stream window
	if _, err := c.Write(append(hello, payload...)); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("got %d bytes", len(hello)+len(payload)); string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// Connections that name no live gateway go to Caddy with their bytes
// replayed. (A gateway refusing the stream used to be here too: it is now
// closed, see TestLiveGatewayNeverReachesServer; no SNI goes to Caddy only
// with NoSNIToServer, see TestCleanAlerts.)
func TestFallsBackToCaddy(t *testing.T) {
	f := newFixtureConfig(t, Config{NoSNIToServer: true})

	for _, tc := range []struct {
		name, sni string
		reason    string
	}{
		{"api site", "api.zone.test", ""},
		{"other site", "example.org", ""},
		{"no sni", "", ""},
		{"gateway without session", "offline.zone.test", ReasonNoSession},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before float64
			if tc.reason != "" {
				before = value(f.m.RefusedVec.WithLabelValues(tc.reason))
			}
			hello := captureHello(t, tc.sni)
			c := f.dial()
			if _, err := c.Write(hello); err != nil {
				t.Fatal(err)
			}
			got := f.accept()
			b := make([]byte, len(hello))
			if _, err := io.ReadFull(got, b); err != nil || !bytes.Equal(b, hello) {
				t.Fatalf("the ClientHello was not replayed to Caddy: %v", err)
			}
			if tc.reason != "" {
				if after := value(f.m.RefusedVec.WithLabelValues(tc.reason)); after != before+1 {
					t.Fatalf("refused{%s}: %v, then %v", tc.reason, before, after)
				}
			}
		})
	}

	t.Run("plain http", func(t *testing.T) {
		c := f.dial()
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: api.zone.test\r\n\r\n")
		req, err := http.ReadRequest(bufio.NewReader(f.accept()))
		if err != nil || req.Host != "api.zone.test" {
			t.Fatalf("%v %v", req, err)
		}
	})
}

// A client that never sends its ClientHello neither delays the others nor
// stays connected past the peek timeout.
func TestSilentClientDoesNotBlockAccept(t *testing.T) {
	f := newFixture(t, 500*time.Millisecond)
	before := value(f.m.RefusedVec.WithLabelValues(ReasonTimeout))
	silent := f.dial()
	start := time.Now()
	c := f.dial()
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	f.accept()
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Fatalf("a silent client delayed Accept by %v", d)
	}
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("the silent client got data")
	}
	testtools.Eventually(t, 10*time.Second, "the timeout to be counted", func() bool {
		return value(f.m.RefusedVec.WithLabelValues(ReasonTimeout)) == before+1
	})
}

// Closing the listener, as Caddy does on a config reload, stops Accept but
// leaves established relays running.
func TestCloseKeepsRelays(t *testing.T) {
	f := newFixture(t, 0)
	hello := captureHello(t, "echo.zone.test")
	f.agent("echo", func(st *tunnel.Stream) {
		_ = st.Ack(true, "")
		_, _ = io.Copy(st, st)
	})
	c := f.dial()
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
		t.Fatal(err)
	}
	if err := f.ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := c.Write([]byte("still there")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len("still there"))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "still there" {
		t.Fatalf("relay after Close: %q %v", b, err)
	}
	if _, err := net.DialTimeout("tcp", f.ln.Addr().String(), time.Second); err == nil {
		t.Fatal("the socket still accepts after Close")
	}
}

// Many connections at once, each its own stream, none lost.
func TestConcurrentRelays(t *testing.T) {
	f := newFixture(t, 0)
	f.agent("echo", func(st *tunnel.Stream) {
		_ = st.Ack(true, "")
		_, _ = io.Copy(st, st)
		_ = st.CloseWrite()
	})
	hello := captureHello(t, "echo.zone.test")
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", f.ln.Addr().String(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			msg := append(append([]byte{}, hello...), fmt.Sprintf("conn %d", i)...)
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			_ = c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("conn %d: %d bytes, %v", i, len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A custom domain a gateway claimed is relayed down its tunnel like
// NAME.ZONE, TLS ending on the gateway with its own certificate for the
// domain; an unclaimed name outside the zone still goes to Caddy, and a
// claimed one whose gateway is offline gets an alert.
func TestRoutesClaimedDomain(t *testing.T) {
	claims := map[string]string{"home.example.com": "alpha", "cold.example.com": "offline"}
	f := newFixtureConfig(t, Config{Domain: func(sni string) (string, bool) {
		name, ok := claims[strings.ToLower(sni)]
		return name, ok
	}})
	cert, pool := selfSigned(t, "home.example.com")
	f.agent("alpha", tlsGateway(cert, "alpha", nil))

	tc := tls.Client(f.dial(), &tls.Config{ServerName: "home.example.com", RootCAs: pool})
	fmt.Fprint(tc, "GET /page HTTP/1.1\r\nHost: home.example.com\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatalf("home.example.com: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	tc.Close()
	if string(b) != "alpha /page" || tc.ConnectionState().PeerCertificates[0].Subject.CommonName != "home.example.com" {
		t.Fatalf("home.example.com: %q", b)
	}

	hello := captureHello(t, "unclaimed.example.com")
	c := f.dial()
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(hello))
	if _, err := io.ReadFull(f.accept(), got); err != nil || !bytes.Equal(got, hello) {
		t.Fatalf("an unclaimed name did not reach Caddy: %v", err)
	}

	before := value(f.m.RefusedVec.WithLabelValues(ReasonBelowOffline))
	c = f.dial()
	if _, err := c.Write(captureHello(t, "cold.example.com")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	if after := value(f.m.RefusedVec.WithLabelValues(ReasonBelowOffline)); after != before+1 {
		t.Fatalf("refused{%s}: %v, then %v", ReasonBelowOffline, before, after)
	}
}
