package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// pipeConn is one end of an in-memory message transport for a tunnel
// session pair.
type pipeConn struct {
	in, out chan []byte
	once    *sync.Once
	done    chan struct{}
	// dataFrames counts the Data frames written at this end: the frames
	// the session sends, after its writer merged what queued up.
	dataFrames atomic.Int64
}

func pipe() (*pipeConn, *pipeConn) {
	a, b := make(chan []byte, 64), make(chan []byte, 64)
	once, done := new(sync.Once), make(chan struct{})
	return &pipeConn{in: a, out: b, once: once, done: done}, &pipeConn{in: b, out: a, once: once, done: done}
}

func (p *pipeConn) ReadMessage(ctx context.Context) ([]byte, error) {
	select {
	case m := <-p.in:
		return m, nil
	case <-p.done:
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeConn) WriteMessage(ctx context.Context, b []byte) error {
	if len(b) > 0 && tunnel.MessageType(b[0]) == tunnel.TypeData {
		p.dataFrames.Add(1)
	}
	select {
	case p.out <- append([]byte(nil), b...):
		return nil
	case <-p.done:
		return io.ErrClosedPipe
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeConn) Close() error { p.once.Do(func() { close(p.done) }); return nil }

// sessions returns a cloud-side and an agent-side session; the agent side
// serves every stream with handle.
func sessions(t *testing.T, handle func(*tunnel.Stream)) *tunnel.Session {
	cloud, _ := countedSessions(t, handle)
	return cloud
}

// countedSessions is sessions, and also returns the count of Data frames
// the agent side sends.
func countedSessions(t testing.TB, handle func(*tunnel.Stream)) (*tunnel.Session, *atomic.Int64) {
	a, b := pipe()
	cloud, err := tunnel.NewSession(a, tunnel.Config{})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := tunnel.NewSession(b, tunnel.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			st, err := agent.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() { defer st.Close(); handle(st) })
		}
	})
	t.Cleanup(func() { cloud.Close(); agent.Close(); wg.Wait() })
	return cloud, &b.dataFrames
}

func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	cert := srv.TLS.Certificates[0]
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	srv.Close()
	return cert, pool
}

func TestStreamsAreProxiedWithTheOriginalClient(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xff=%s proto=%s path=%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.URL.Path)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	cert, pool := selfSigned(t)
	s, err := New(Config{Upstream: u, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }})
	if err != nil {
		t.Fatal(err)
	}
	cloud := sessions(t, s.HandleStream)
	defer s.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cloud.Open(ctx, tunnel.Initiator{Gatename: "home", ClientAddr: "203.0.113.5:4444"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tc := tls.Client(st, &tls.Config{RootCAs: pool, ServerName: "example.com"})
	fmt.Fprintf(tc, "GET /x HTTP/1.1\r\nHost: home.box.test\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "xff=203.0.113.5 proto=https path=/x" {
		t.Fatalf("upstream saw %q", b)
	}

	// The same server on a LAN listener at the same time.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"}, ForceAttemptHTTP2: true}}
	resp, err = hc.Get("https://" + ln.Addr().String() + "/lan")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	hc.CloseIdleConnections()
	if string(b) != "xff=127.0.0.1 proto=https path=/lan" || resp.ProtoMajor != 2 {
		t.Fatalf("LAN client: %q over %s", b, resp.Proto)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// upstream is a gateway's server that takes one connection and sends on
// got what serve makes of it (or the error).
func upstream(t *testing.T, serve func(c net.Conn) (string, error)) (net.Listener, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r, err := serve(c)
		if err != nil {
			r = err.Error()
		}
		got <- r
	}()
	return ln, got
}

func TestPassthroughWithProxyHeader(t *testing.T) {
	ln, got := upstream(t, func(c net.Conn) (string, error) {
		b := make([]byte, 16+12+5)
		if _, err := io.ReadFull(c, b); err != nil {
			return "", err
		}
		c.Write([]byte("bye"))
		return fmt.Sprintf("%x", b[:12]) + " " + net.IP(b[16:20]).String() + " " + string(b[28:]), nil
	})
	s, err := New(Config{Passthrough: true, ProxyProtocol: true, UpstreamAddr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	cloud := sessions(t, s.HandleStream)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cloud.Open(ctx, tunnel.Initiator{Gatename: "home", ClientAddr: "198.51.100.7:5555"})
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("hello"))
	st.CloseWrite()
	b, _ := io.ReadAll(st)
	if r := <-got; r != "0d0a0d0a000d0a515549540a 198.51.100.7 hello" || string(b) != "bye" {
		t.Fatalf("upstream read %q, client got %q", r, b)
	}
}

func TestPassthroughRefusesWhenUpstreamIsDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	s, _ := New(Config{Passthrough: true, UpstreamAddr: addr})
	defer s.Shutdown(context.Background())
	cloud := sessions(t, s.HandleStream)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := cloud.Open(ctx, tunnel.Initiator{Gatename: "home"})
	if err == nil || !strings.Contains(err.Error(), "upstream unreachable") {
		t.Fatalf("Open: %v", err)
	}
}

// The ClientHello that comes with a stream (early data, which the relay
// writes before its Ack) reaches the upstream right behind the PROXY
// header, and the stream's later bytes follow in order.
func TestPassthroughEarlyData(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hello := strings.Repeat("h", 1500)
	type result struct {
		first string
		rest  string
		err   error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 64<<10)
		n, err := io.ReadAtLeast(c, b, 16+12+len(hello))
		if err != nil {
			got <- result{err: err}
			return
		}
		rest, err := io.ReadAll(c)
		got <- result{string(b[:n]), string(rest), err}
	}()
	s, err := New(Config{Passthrough: true, ProxyProtocol: true, UpstreamAddr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	cloud := sessions(t, s.HandleStream)
	cloud.SetPeerVersion(tunnel.VersionEarlyData)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cloud.OpenEarly(ctx, tunnel.Initiator{Gatename: "home", ClientAddr: "198.51.100.7:5555"}, []byte(hello))
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("after"))
	st.CloseWrite()
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	const hdrLen = 16 + 12
	if len(r.first) < hdrLen+len(hello) || !strings.HasPrefix(r.first, "\r\n\r\n\x00\r\nQUIT\n") || r.first[hdrLen:hdrLen+len(hello)] != hello {
		t.Fatalf("the upstream read %d bytes %q..., want the PROXY header and the %d early bytes first", len(r.first), r.first[:min(len(r.first), 40)], len(hello))
	}
	if rest := r.first[hdrLen+len(hello):] + r.rest; rest != "after" {
		t.Fatalf("then the upstream read %q, want %q", rest, "after")
	}
	st.Close()
}

// Early data without a PROXY header goes to the upstream as it came, both
// to an upstream given by address (dialed as such) and by name (resolved
// per connection).
func TestPassthroughEarlyDataWithoutHeader(t *testing.T) {
	for _, byName := range []bool{false, true} {
		t.Run(fmt.Sprintf("byName=%v", byName), func(t *testing.T) {
			ln, got := upstream(t, func(c net.Conn) (string, error) {
				b, err := io.ReadAll(c)
				return string(b), err
			})
			addr := ln.Addr().String()
			if byName {
				addr = net.JoinHostPort("localhost", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
			}
			s, err := New(Config{Passthrough: true, UpstreamAddr: addr})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Shutdown(context.Background())
			if s.upstreamIP.IsValid() == byName {
				t.Fatalf("upstream %q taken as an address: %v", addr, s.upstreamIP.IsValid())
			}
			cloud := sessions(t, s.HandleStream)
			cloud.SetPeerVersion(tunnel.VersionEarlyData)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := cloud.OpenEarly(ctx, tunnel.Initiator{Gatename: "home", ClientAddr: "198.51.100.7:5555"}, []byte("hello-early"))
			if err != nil {
				t.Fatal(err)
			}
			st.Write([]byte("+after"))
			st.CloseWrite()
			if r := <-got; r != "hello-early+after" {
				t.Fatalf("the upstream read %q", r)
			}
			st.Close()
		})
	}
}
