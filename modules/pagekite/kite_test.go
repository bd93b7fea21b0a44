package pagekite

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	kiteName   = "myhome.box.test"
	kiteSecret = "s3cret-token"
)

// blob is the deterministic content the backend serves: n bytes.
func blob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

// backend is the kite's local HTTPS server, with its own certificate.
type backend struct {
	cert *testcert.Cert
	port int
}

func startBackend(t *testing.T) *backend {
	cert := testcert.MustSelfSigned(t, testcert.Options{DNSNames: []string{kiteName}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(blob(n))
	})
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert.TLS()}}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return &backend{cert: cert, port: ln.Addr().(*net.TCPAddr).Port}
}

// frontend is a test listener as the cloud's will be: kites (Sniff) go to
// the Server, TLS goes through the registered tunnel.
type frontend struct {
	srv  *Server
	port int
	mu   sync.Mutex
	tuns map[string]hub.Tunnel
	reg  chan string
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func startFrontend(t *testing.T, limits Limits) *frontend {
	fe := &frontend{tuns: map[string]hub.Tunnel{}, reg: make(chan string, 16)}
	fe.srv = &Server{
		Authenticate: func(_ context.Context, domain, proto string) (string, error) {
			if domain != kiteName {
				return "", ErrUnknownKite
			}
			return kiteSecret, nil
		},
		Register: func(domain string, tun hub.Tunnel) error {
			fe.mu.Lock()
			defer fe.mu.Unlock()
			if old := fe.tuns[domain]; old != nil && old.Err() == nil {
				return errors.New("already connected")
			}
			fe.tuns[domain] = tun
			fe.reg <- domain
			return nil
		},
		Limits: limits,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fe.port = ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { fe.serve(ctx, c) })
		}
	})
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		wg.Wait()
	})
	return fe
}

func (fe *frontend) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	first, _ := br.Peek(SniffLen)
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: br}
	if Sniff(first) {
		_ = fe.srv.ServeConn(ctx, pc)
		return
	}
	fe.mu.Lock()
	tun := fe.tuns[kiteName]
	fe.mu.Unlock()
	if tun == nil || tun.Err() != nil {
		return
	}
	st, err := tun.Open(ctx, tunnel.Meta{Gateway: "myhome", ServerName: kiteName, Client: c.RemoteAddr().(*net.TCPAddr).AddrPort()})
	if err != nil {
		return
	}
	defer st.Close()
	relay.Conns(ctx, pc, st, relay.Counts{})
}

func (fe *frontend) tunnel() hub.Tunnel {
	fe.mu.Lock()
	defer fe.mu.Unlock()
	return fe.tuns[kiteName]
}

// kiteProc is a running Debian pagekite.
type kiteProc struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out bytes.Buffer
}

func (k *kiteProc) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.out.Write(p)
}

func (k *kiteProc) log() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.out.String()
}

// waitLog waits until the kite's log contains s.
func (k *kiteProc) waitLog(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Contains(k.log(), s) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("kite log has no %q after %v:\n%s", s, within, k.log())
}

func startKite(t *testing.T, fePort, bePort int, secret string, extra ...string) *kiteProc {
	bin := testtools.Binary(t, "pagekite", "pagekite")
	args := append([]string{
		"--clean", "--logfile=stdio",
		// An IP address as the frontend: the kite then needs no DNS.
		fmt.Sprintf("--frontend=127.0.0.1:%d", fePort),
		fmt.Sprintf("--service_on=https:%s:localhost:%d:%s", kiteName, bePort, secret),
	}, extra...)
	k := &kiteProc{cmd: exec.Command(bin, args...)}
	k.cmd.Stdout, k.cmd.Stderr = k, k
	k.cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k.cmd.Process.Kill()
		_ = k.cmd.Wait()
		if t.Failed() {
			t.Logf("kite log:\n%s", k.log())
		}
	})
	return k
}

func waitRegistered(t *testing.T, fe *frontend) {
	t.Helper()
	select {
	case <-fe.reg:
	case <-time.After(30 * time.Second):
		t.Fatal("the kite did not register within 30 s")
	}
}

func curl(t *testing.T, fe *frontend, be *backend, args ...string) []byte {
	t.Helper()
	bin := testtools.Binary(t, "curl", "curl")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := be.cert.WriteCert(caFile); err != nil {
		t.Fatal(err)
	}
	all := append([]string{"-sS", "--fail", "--max-time", "60",
		"--resolve", fmt.Sprintf("%s:%d:127.0.0.1", kiteName, fe.port), "--cacert", caFile}, args...)
	out, err := exec.Command(bin, all...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("curl %v: %v: %s", args, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	return out
}

func (fe *frontend) url(path string) string {
	return fmt.Sprintf("https://%s:%d%s", kiteName, fe.port, path)
}

func TestKiteEndToEnd(t *testing.T) {
	be := startBackend(t)
	// A tight stream buffer: a kite that ignored our SKB would overrun it,
	// and the stalled stream below would be reset.
	fe := startFrontend(t, Limits{StreamBuffer: 128 << 10})
	kite := startKite(t, fe.port, be.port, kiteSecret)
	waitRegistered(t, fe)
	kite.waitLog(t, "connect=", 10*time.Second)
	if k := fe.tunnel().Kind(); k != "pagekite" {
		t.Fatalf("Kind() = %q", k)
	}

	t.Run("backend certificate, byte-exact", func(t *testing.T) {
		out := curl(t, fe, be, "-w", "%{certs}", "-o", os.DevNull, fe.url("/blob?n=10"))
		if !bytes.Contains(bytes.ReplaceAll(out, []byte("\r"), nil), bytes.TrimSpace(be.cert.CertPEM())) {
			t.Fatalf("curl saw another certificate:\n%s", out)
		}
		body := curl(t, fe, be, fe.url("/blob?n=300000"))
		if !bytes.Equal(body, blob(300000)) {
			t.Fatalf("body differs: %d bytes", len(body))
		}
	})

	t.Run("50 concurrent downloads", func(t *testing.T) {
		const n, size = 50, 200 << 10
		dir := t.TempDir()
		args := []string{"-Z", "--parallel-max", strconv.Itoa(n)}
		for i := range n {
			args = append(args, "-o", filepath.Join(dir, strconv.Itoa(i)), fe.url(fmt.Sprintf("/blob?n=%d", size+i)))
		}
		curl(t, fe, be, args...)
		for i := range n {
			got, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(got) != sha256.Sum256(blob(size+i)) {
				t.Fatalf("download %d differs (%d bytes)", i, len(got))
			}
		}
	})

	t.Run("stalled reader next to a fast stream", func(t *testing.T) {
		const big = 8 << 20
		pool := be.cert.Pool()
		// The stalled reader asks for 8 MiB and reads nothing.
		raw, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", fe.port))
		if err != nil {
			t.Fatal(err)
		}
		stalled := tls.Client(raw, &tls.Config{ServerName: kiteName, RootCAs: pool})
		defer stalled.Close()
		if _, err := fmt.Fprintf(stalled, "GET /blob?n=%d HTTP/1.1\r\nHost: %s\r\n\r\n", big, kiteName); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // let the kite push what flow control allows

		start := time.Now()
		body := curl(t, fe, be, fe.url("/blob?n=4000000"))
		if !bytes.Equal(body, blob(4000000)) {
			t.Fatal("fast stream's body differs")
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("fast stream took %v next to a stalled one", d)
		}
		if o := fe.srv.Stats().StreamOverruns.Load(); o != 0 {
			t.Fatalf("%d stream overruns: the kite was not flow-controlled", o)
		}
		peak := fe.srv.Stats().PeakStreamBuffer.Load()
		t.Logf("peak bytes held for one stream: %d", peak)
		if peak > 128<<10 {
			t.Fatalf("a stream held %d bytes", peak)
		}
		// Now the stalled reader reads everything: nothing was dropped.
		_ = stalled.SetReadDeadline(time.Now().Add(60 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(stalled), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(got, blob(big)) {
			t.Fatalf("stalled stream: %v, %d bytes, equal=%v", err, len(got), bytes.Equal(got, blob(big)))
		}
	})

	t.Run("wrong secret is Invalid", func(t *testing.T) {
		bad := startKite(t, fe.port, be.port, "wrong-secret")
		bad.waitLog(t, "reason=signature", 30*time.Second)
	})

	t.Run("second kite is Duplicate", func(t *testing.T) {
		dup := startKite(t, fe.port, be.port, kiteSecret)
		dup.waitLog(t, "err=Duplicate", 30*time.Second)
		if fe.tunnel().Err() != nil {
			t.Fatal("the first kite's tunnel ended")
		}
		body := curl(t, fe, be, fe.url("/blob?n=1000"))
		if !bytes.Equal(body, blob(1000)) {
			t.Fatal("body differs after the duplicate")
		}
	})

	t.Run("kite gone ends the tunnel", func(t *testing.T) {
		tun := fe.tunnel()
		_ = kite.cmd.Process.Kill()
		select {
		case <-tun.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("tunnel not done after the kite died")
		}
		if tun.Err() == nil {
			t.Fatal("Err() nil after Done")
		}
	})
}

func TestKiteKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 25 s of idle tunnel")
	}
	be := startBackend(t)
	// Two kites idle side by side. On the first frontend we ping every
	// 2 s and the kite must answer; our pings count as activity, so that
	// kite never pings. On the second we stay quiet and the kite, at its
	// shortest keepalive (20 s), must ping us and get its PONG.
	ours := startFrontend(t, Limits{PingInterval: 2 * time.Second, PingTimeout: 3 * time.Second})
	theirs := startFrontend(t, Limits{})
	startKite(t, ours.port, be.port, kiteSecret)
	startKite(t, theirs.port, be.port, kiteSecret, "--keepalive=20")
	waitRegistered(t, ours)
	waitRegistered(t, theirs)
	select {
	case <-ours.tunnel().Done():
		t.Fatalf("tunnel died while idle: %v", ours.tunnel().Err())
	case <-theirs.tunnel().Done():
		t.Fatalf("tunnel died while idle: %v", theirs.tunnel().Err())
	case <-time.After(25 * time.Second):
	}
	if n := ours.srv.Stats().PongsFromKite.Load(); n < 3 {
		t.Fatalf("kite answered %d of our pings", n)
	}
	if n := theirs.srv.Stats().PingsFromKite.Load(); n < 1 {
		t.Fatal("the kite never pinged in 25 s with --keepalive=20")
	}
	for _, fe := range []*frontend{ours, theirs} {
		if err := fe.tunnel().Err(); err != nil {
			t.Fatalf("tunnel ended: %v", err)
		}
		body := curl(t, fe, be, fe.url("/blob?n=5000"))
		if !bytes.Equal(body, blob(5000)) {
			t.Fatal("body differs after idling")
		}
	}
}

// TestKiteHalfClose checks that a client's half-close works end to end:
// the backend reads the client's data to EOF and only then answers. (With
// pagekite 1.5.2 this also passes when CloseWrite sends "EOF: 1WR"; we send
// "1R", which PyPagekite's source maps to a shutdown of the write side
// only; see docs/pagekite.md.)
func TestKiteHalfClose(t *testing.T) {
	cert := testcert.MustSelfSigned(t, testcert.Options{DNSNames: []string{kiteName}})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.TLS()}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				n, err := io.Copy(io.Discard, c)
				if err == nil {
					fmt.Fprintf(c, "got %d", n)
				}
			})
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	be := &backend{cert: cert, port: ln.Addr().(*net.TCPAddr).Port}
	fe := startFrontend(t, Limits{})
	startKite(t, fe.port, be.port, kiteSecret)
	waitRegistered(t, fe)

	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", fe.port), &tls.Config{ServerName: kiteName, RootCAs: cert.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(blob(100000)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 100000" {
		t.Fatalf("after half-close: %q, %v", got, err)
	}
}
