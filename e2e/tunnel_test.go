package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// fastBackoff reconnects within a second, as tests want after a restart.
var fastBackoff = client.Backoff{Min: 100 * time.Millisecond, Max: time.Second}

// slowBackoff keeps a disconnected client disconnected for the test's
// duration, so its State keeps the reason it was closed.
var slowBackoff = client.Backoff{Min: 10 * time.Minute, Max: 10 * time.Minute}

// Two gateways behind their tunnels answer through the cloud's HTTPS port
// with their own certificates; the API, unknown names and plain HTTP on
// the same port are still Caddy's.
func TestTunnelIngress(t *testing.T) {
	for _, driver := range teststore.Drivers {
		t.Run(driver, func(t *testing.T) {
			storage := "sqlite"
			if driver == "postgres" {
				storage = postgresStorage(t)
			}
			c := startTunnelCloud(t, storage)
			alphaCert, betaCert := newGatewayCert(t, "alpha"), newGatewayCert(t, "beta")
			alphaSrv := gatewayServer(t, alphaCert, "hello from alpha")
			betaSrv := gatewayServer(t, betaCert, "hello from beta")
			alpha := startAgent(t, c, "alpha", subscribe(t, c, "alpha"), alphaSrv.Listener.Addr().String(), fastBackoff)
			startAgent(t, c, "beta", subscribe(t, c, "beta"), betaSrv.Listener.Addr().String(), fastBackoff)

			for _, tc := range []struct {
				host string
				cert gatewayCert
				want string
			}{
				{"alpha.box.test", alphaCert, "hello from alpha (path /x)"},
				{"www.alpha.box.test", alphaCert, "hello from alpha (path /x)"},
				{"beta.box.test", betaCert, "hello from beta (path /x)"},
			} {
				r := curlTLS(t, c, tc.host, "/x", tc.cert.file)
				if r.code != 200 || strings.TrimSpace(r.body) != tc.want {
					t.Fatalf("%s: %d %q", tc.host, r.code, r.body)
				}
				// curl saw the gateway's own certificate: the cloud did not
				// terminate TLS.
				if s, i := r.certLine("subject"), r.certLine("issuer"); !strings.Contains(s, tc.cert.org) || !strings.Contains(i, tc.cert.org) {
					t.Fatalf("%s: certificate %q issued by %q, want the gateway's own", tc.host, s, i)
				}
			}
			// Both agents' sessions run on the sealed transport: the
			// agent and the Caddy build share the TLS connection's
			// exporter (docs/protocol.md).
			if n := strings.Count(c.logs(), `"transport":"`+tunnel.SealedUpgrade+`"`); n < 2 {
				t.Errorf("%d sessions logged on the sealed transport, want 2:\n%s", n, c.logs())
			}
			inits := alpha.initiators()
			if len(inits) != 2 || inits[0].Gatename != "alpha" || !strings.HasPrefix(inits[0].ClientAddr, "127.0.0.1:") {
				t.Fatalf("alpha's streams: %+v", inits)
			}

			// The same port still serves the API and the cloud's pages.
			if code, _ := c.curl("api.box.test", "/connectivity-check"); code != 200 {
				t.Fatalf("api: %d", code)
			}
			r := curlTLS(t, c, "nobody.box.test", "/", c.rootCA())
			if r.code != 404 || !strings.Contains(r.body, "No such gateway") {
				t.Fatalf("unknown gateway: %d %q", r.code, r.body)
			}
			if !strings.Contains(r.certLine("issuer"), "Caddy Local Authority") {
				t.Fatalf("unknown gateway: issuer %q, want the cloud's CA", r.certLine("issuer"))
			}
			out, err := exec.Command("curl", "-sS", "--max-time", "10", fmt.Sprintf("http://127.0.0.1:%d/", c.https)).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "HTTP request to an HTTPS server") {
				t.Fatalf("plain HTTP on the HTTPS port: %v %s", err, out)
			}

			m := adminMetrics(t, c)
			if v := metricValue(m, "gatehouse_ingress_streams_opened_total"); v < 3 {
				t.Fatalf("streams opened: %v", v)
			}
			if v := metricValue(m, `gatehouse_ingress_refused_total{reason="not_tls"}`); v < 1 {
				t.Fatalf("refused not_tls: %v", v)
			}
			if v := metricValue(m, `gatehouse_ingress_relayed_bytes_total{direction="to_client"}`); v < 1000 {
				t.Fatalf("bytes to clients: %v", v)
			}
		})
	}
}

// A newer client for the same name takes the tunnel over; the older one
// is told why.
func TestTunnelSessionReplacement(t *testing.T) {
	c := startTunnelCloud(t, "")
	cert := newGatewayCert(t, "alpha")
	oldSrv := gatewayServer(t, cert, "old gateway")
	newSrv := gatewayServer(t, cert, "new gateway")
	token := subscribe(t, c, "alpha")
	old := startAgent(t, c, "alpha", token, oldSrv.Listener.Addr().String(), slowBackoff)
	if r := curlTLS(t, c, "alpha.box.test", "/", cert.file); !strings.Contains(r.body, "old gateway") {
		t.Fatalf("before: %d %q", r.code, r.body)
	}
	startAgent(t, c, "alpha", token, newSrv.Listener.Addr().String(), fastBackoff)
	testtools.Eventually(t, 10*time.Second, "the old client to be replaced", func() bool {
		st := old.c.State()
		return !st.Connected && st.LastError != nil && strings.Contains(st.LastError.Error(), hub.ReasonReplaced)
	})
	if r := curlTLS(t, c, "alpha.box.test", "/", cert.file); r.code != 200 || !strings.Contains(r.body, "new gateway") {
		t.Fatalf("after: %d %q", r.code, r.body)
	}
}

// After a cloud restart the client reconnects by itself and its gateway
// answers again.
func TestTunnelCloudRestart(t *testing.T) {
	c := startTunnelCloud(t, "")
	cert := newGatewayCert(t, "alpha")
	srv := gatewayServer(t, cert, "hello from alpha")
	a := startAgent(t, c, "alpha", subscribe(t, c, "alpha"), srv.Listener.Addr().String(), fastBackoff)
	if r := curlTLS(t, c, "alpha.box.test", "/", cert.file); r.code != 200 {
		t.Fatalf("before: %d %q", r.code, r.body)
	}
	before := a.c.State().Since
	c.restart()
	testtools.Eventually(t, 20*time.Second, "the client to reconnect", func() bool {
		st := a.c.State()
		return st.Connected && st.Since.After(before)
	})
	if r := curlTLS(t, c, "alpha.box.test", "/", cert.file); r.code != 200 || !strings.Contains(r.body, "hello from alpha") {
		t.Fatalf("after restart: %d %q", r.code, r.body)
	}
}

// A config reload replaces the HTTP server and the gatehouse app, but the
// tunnels and the connections relayed over them carry on.
func TestTunnelReloadKeepsRelays(t *testing.T) {
	c := startTunnelCloud(t, "")
	cert := newGatewayCert(t, "alpha")
	srv := gatewayServer(t, cert, "hello from alpha")
	a := startAgent(t, c, "alpha", subscribe(t, c, "alpha"), srv.Listener.Addr().String(), fastBackoff)
	since := a.c.State().Since

	conn, err := dialGateway(t, c, "alpha", cert.pool)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	get := keptConnGetter(t, conn, "alpha.box.test")
	if got := get("/before"); !strings.Contains(got, "/before") {
		t.Fatalf("before: %q", got)
	}

	cfg := filepath.Join(c.dir, "Caddyfile")
	b, _ := os.ReadFile(cfg)
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "expire_after 7d", "expire_after 8d", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(caddyBinary(t), "reload", "--config", cfg, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("127.0.0.1:%d", c.admin)).CombinedOutput()
	if err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if got := get("/after"); !strings.Contains(got, "/after") {
		t.Fatalf("after reload, same connection: %q", got)
	}
	if st := a.c.State(); !st.Connected || !st.Since.Equal(since) {
		t.Fatalf("the tunnel did not survive the reload: %+v", st)
	}
	if r := curlTLS(t, c, "alpha.box.test", "/new", cert.file); r.code != 200 {
		t.Fatalf("new connection after reload: %d %q", r.code, r.body)
	}
}

// A gateway whose client stopped is served by the cloud itself: a 503
// "offline" page over the cloud's wildcard certificate, never a TLS alert.
func TestTunnelOfflinePage(t *testing.T) {
	c := startTunnelCloud(t, "")
	cert := newGatewayCert(t, "alpha")
	srv := gatewayServer(t, cert, "hello from alpha")
	token := subscribe(t, c, "alpha")
	if code, _ := c.api("/ping?token=" + token); code != 200 {
		t.Fatalf("ping: %d", code)
	}
	a := startAgent(t, c, "alpha", token, srv.Listener.Addr().String(), fastBackoff)
	if r := curlTLS(t, c, "alpha.box.test", "/", cert.file); r.code != 200 {
		t.Fatalf("online: %d %q", r.code, r.body)
	}
	a.stop()
	var r curlResult
	testtools.Eventually(t, 10*time.Second, "the offline page", func() bool {
		var err error
		r, err = tryCurlTLS(t, c, "alpha.box.test", "/", c.rootCA())
		return err == nil && r.code == 503
	})
	for _, want := range []string{"This gateway is offline", "<strong>alpha</strong>", "alpha.box.test", "not reachable through its tunnel", "Last seen:"} {
		if !strings.Contains(r.body, want) {
			t.Fatalf("offline page lacks %q:\n%s", want, r.body)
		}
	}
	if i := r.certLine("issuer"); !strings.Contains(i, "Caddy Local Authority") {
		t.Fatalf("offline page certificate issued by %q, want the cloud's CA", i)
	}
	// The gateway's own certificate does not verify the cloud's answer:
	// curl with only the gateway's CA fails the handshake.
	if _, err := tryCurlTLS(t, c, "alpha.box.test", "/", cert.file); err == nil {
		t.Fatal("curl trusting only the gateway's certificate accepted the cloud's")
	}
	if v := metricValue(adminMetrics(t, c), `gatehouse_ingress_refused_total{reason="no_session"}`); v < 1 {
		t.Fatalf("refused no_session: %v", v)
	}
}

// /unsubscribe closes the gateway's tunnel, telling its client why; the
// name then is unknown.
func TestTunnelUnsubscribeClosesTunnel(t *testing.T) {
	c := startTunnelCloud(t, "")
	cert := newGatewayCert(t, "alpha")
	srv := gatewayServer(t, cert, "hello from alpha")
	token := subscribe(t, c, "alpha")
	a := startAgent(t, c, "alpha", token, srv.Listener.Addr().String(), slowBackoff)
	if r := curlTLS(t, c, "alpha.box.test", "/", cert.file); r.code != 200 {
		t.Fatalf("online: %d %q", r.code, r.body)
	}
	if code, _ := c.api("/unsubscribe?token=" + token); code != 200 {
		t.Fatalf("unsubscribe: %d", code)
	}
	testtools.Eventually(t, 10*time.Second, "the client to be disconnected", func() bool {
		st := a.c.State()
		return !st.Connected && st.LastError != nil && strings.Contains(st.LastError.Error(), "unsubscribed")
	})
	t.Logf("client state: %v", a.c.State().LastError)
	r := curlTLS(t, c, "alpha.box.test", "/", c.rootCA())
	if r.code != 404 || !strings.Contains(r.body, "No such gateway") {
		t.Fatalf("after unsubscribe: %d %q", r.code, r.body)
	}
}

// One client that stops reading holds back only its own stream: another
// download through the same tunnel keeps its speed.
func TestTunnelStalledReader(t *testing.T) {
	c := startTunnelCloud(t, "")
	cert := newGatewayCert(t, "alpha")
	srv := gatewayServer(t, cert, "hello from alpha")
	startAgent(t, c, "alpha", subscribe(t, c, "alpha"), srv.Listener.Addr().String(), fastBackoff)

	const size = 64 << 20
	download := func() (time.Duration, error) {
		conn, err := dialGateway(t, c, "alpha", cert.pool)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
		start := time.Now()
		fmt.Fprintf(conn, "GET /big?n=%d HTTP/1.1\r\nHost: alpha.box.test\r\nConnection: close\r\n\r\n", size)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && n != size {
			err = fmt.Errorf("got %d bytes", n)
		}
		return time.Since(start), err
	}
	alone, err := download()
	if err != nil {
		t.Fatal(err)
	}

	// The stalled client asks for a large body and reads only its
	// beginning, so the tunnel fills that stream's window and stops there.
	stalled, err := dialGateway(t, c, "alpha", cert.pool)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	_ = stalled.SetDeadline(time.Now().Add(2 * time.Minute))
	fmt.Fprintf(stalled, "GET /big?n=%d HTTP/1.1\r\nHost: alpha.box.test\r\n\r\n", 1<<30)
	sbr := bufio.NewReader(stalled)
	if _, err := http.ReadResponse(sbr, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let its buffers fill

	beside, err := download()
	if err != nil {
		t.Fatalf("download beside a stalled reader: %v", err)
	}
	mbps := func(d time.Duration) float64 { return size / d.Seconds() / 1e6 }
	t.Logf("64 MiB alone: %v (%.0f MB/s); beside a stalled reader: %v (%.0f MB/s)", alone, mbps(alone), beside, mbps(beside))
	// Generous, for a shared machine: the point is that it is not stalled.
	if beside > 4*alone+2*time.Second {
		t.Fatalf("the download beside a stalled reader took %v, alone %v", beside, alone)
	}
	// The stalled stream is still alive and resumes.
	if _, err := io.CopyN(io.Discard, sbr, 4<<20); err != nil {
		t.Fatalf("the stalled stream did not resume: %v", err)
	}
}

// A thousand TLS connections through the cloud at once, each its own
// stream of the same session, each fetching a small page; all are open
// together before any closes.
func TestTunnelThousandStreams(t *testing.T) {
	// The agent takes the thousand streams as fast as the machine lets it;
	// under -race beside other test packages that can take longer than
	// the usual 5 s open timeout, and what is tested here is that every
	// stream gets through, not how fast (the tunnel benchmark measures that).
	c := startTunnelCloudConfig(t, strings.NewReplacer("%STORAGE%", "sqlite %DIR%/registry.db", "%APPEXTRA%", "",
		"%OPENTIMEOUT%", "60s").Replace(tunnelCaddyfile))
	cert := newGatewayCert(t, "alpha")
	srv := gatewayServer(t, cert, "hello from alpha")
	startAgent(t, c, "alpha", subscribe(t, c, "alpha"), srv.Listener.Addr().String(), fastBackoff)

	const n = 1000
	var (
		wg      sync.WaitGroup
		fetched sync.WaitGroup // every connection has its page
		open    atomic.Int64
		maxOpen atomic.Int64
		errs    = make(chan error, n)
		release = make(chan struct{})
	)
	fetched.Add(n)
	deadline := time.Now().Add(3 * time.Minute)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			once := sync.OnceFunc(fetched.Done)
			defer once()
			conn, err := dialGateway(t, c, "alpha", cert.pool)
			if err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(deadline)
			fmt.Fprintf(conn, "GET /page%d HTTP/1.1\r\nHost: alpha.box.test\r\n\r\n", i)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !strings.Contains(string(b), fmt.Sprintf("/page%d)", i)) {
				errs <- fmt.Errorf("conn %d: %q %v", i, b, err)
				return
			}
			cur := open.Add(1)
			for {
				m := maxOpen.Load()
				if cur <= m || maxOpen.CompareAndSwap(m, cur) {
					break
				}
			}
			once()
			// Hold the connection (and its stream) until all have their page.
			select {
			case <-release:
			case <-time.After(time.Until(deadline)):
				errs <- errors.New("never released")
			}
		}()
	}
	fetched.Wait()
	close(release)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d connections failed", failed, n)
	}
	if m := maxOpen.Load(); m != n {
		t.Fatalf("only %d streams were open at once", m)
	}
}
