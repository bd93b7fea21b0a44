package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// tunnelCaddyfile is a cloud that is its own tunnel frontend: the
// gatehouse listener wrapper before tls, the API site, and the offline
// page for every other name of the zone.
const tunnelCaddyfile = `{
	admin 127.0.0.1:%ADMIN%
	http_port %HTTP%
	https_port %HTTPS%
	local_certs
	skip_install_trust
	servers {
		protocols h1 h2
		listener_wrappers {
			gatehouse {
				peek_timeout 5s
				open_timeout %OPENTIMEOUT%
			}
			tls
		}
	}
	gatehouse {
		zone box.test
		storage %STORAGE%
		expire_after 7d
		rate_limit subscribe 1ns 1000000
		%APPEXTRA%
	}
}
api.box.test {
	gatehouse
}
*.box.test {
	gatehouse offline
}
`

func startTunnelCloud(t *testing.T, storage string) *cloud {
	t.Helper()
	return startTunnelCloudWith(t, storage, "")
}

// startTunnelCloudWith is startTunnelCloud with appExtra added inside the
// cloud's gatehouse { } options.
func startTunnelCloudWith(t *testing.T, storage, appExtra string) *cloud {
	t.Helper()
	if storage == "" || storage == "sqlite" {
		storage = "sqlite %DIR%/registry.db"
	}
	return startTunnelCloudConfig(t, strings.NewReplacer("%STORAGE%", storage, "%APPEXTRA%", appExtra, "%OPENTIMEOUT%", "5s").Replace(tunnelCaddyfile))
}

// startTunnelCloudConfig starts the cloud of a filled-in tunnelCaddyfile
// (env as for startCloud) and waits for its wildcard certificate.
func startTunnelCloudConfig(t *testing.T, caddyfile string, env ...string) *cloud {
	t.Helper()
	c := startCloud(t, caddyfile, env...)
	// The offline site's wildcard certificate comes from the local CA in
	// the background; wait for it, so the first offline answer is a page.
	testtools.Eventually(t, 30*time.Second, "the wildcard certificate", func() bool {
		code, _, err := c.tryCurl("nosuchgateway.box.test", "/")
		return err == nil && code == 404
	})
	return c
}

// gatewayCert is a self-signed certificate of the gateway's own, as a
// gateway obtains for NAME.ZONE (and www below it). Its subject names the
// gateway, so that tests tell it from the cloud's.
type gatewayCert struct {
	cert tls.Certificate
	pool *x509.CertPool
	file string // PEM, for curl --cacert
	org  string
}

func newGatewayCert(t *testing.T, name string) gatewayCert {
	t.Helper()
	host := name + ".box.test"
	org := "Gatehouse test gateway " + name
	c := testcert.MustSelfSigned(t, testcert.Options{
		Serial:   big.NewInt(time.Now().UnixNano()),
		Subject:  pkix.Name{CommonName: host, Organization: []string{org}},
		DNSNames: []string{host, "www." + host},
	})
	file := filepath.Join(t.TempDir(), name+".pem")
	c.MustWrite(t, file, "")
	return gatewayCert{cert: c.TLS(), pool: c.Pool(), file: file, org: org}
}

// gatewayServer is the gateway's own HTTPS server, on loopback, with its
// own certificate: "/" says who answers, "/big?n=N" sends N bytes of a
// repeated pattern, "/rand?n=N&seed=S" the N bytes of randBody(S, N),
// which no reordering or mix-up of two streams leaves unchanged.
func gatewayServer(t *testing.T, cert gatewayCert, hello string) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			for n > 0 {
				k := min(n, int64(len(chunk)))
				if _, err := w.Write(chunk[:k]); err != nil {
					return
				}
				n -= k
			}
			return
		}
		if r.URL.Path == "/rand" {
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			_, _ = io.CopyN(w, randStream(seed), n)
			return
		}
		fmt.Fprintf(w, "%s (path %s)\n", hello, r.URL.Path)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// randStream is the endless pseudo-random byte stream of seed.
func randStream(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return rand.NewChaCha8(key)
}

// randBody is what gatewayServer sends for /rand?n=N&seed=S.
func randBody(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = io.ReadFull(randStream(seed), b)
	return b
}

// testAgent is a gateway's tunnel client running in the test process.
type testAgent struct {
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	inits []tunnel.Initiator
}

// subscribe registers name through the API and returns its token.
func subscribe(t *testing.T, c *cloud, name string) string {
	t.Helper()
	code, sub := c.api("/subscribe?name=" + name)
	if code != 200 {
		t.Fatalf("subscribe %s: %d %v", name, code, sub)
	}
	return sub["token"].(string)
}

// startAgent runs a tunnel client for name with token, connected to the
// cloud's tunnel endpoint and relaying every stream to upstream (host:port
// of the gateway's HTTPS server), and waits until it is connected.
func startAgent(t *testing.T, c *cloud, name, token, upstream string, backoff client.Backoff) *testAgent {
	t.Helper()
	roots := x509.NewCertPool()
	pemBytes, err := os.ReadFile(c.rootCA())
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(pemBytes)
	// The cloud's name is resolved to loopback, as curl --resolve does.
	cloudAddr := net.JoinHostPort(c.host(), strconv.Itoa(c.https))
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, cloudAddr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	a := &testAgent{done: make(chan struct{})}
	a.c = &client.Client{
		URL:        fmt.Sprintf("wss://api.box.test:%d/v1/tunnel", c.https),
		Name:       name,
		Token:      token,
		HTTPClient: &http.Client{Transport: tr},
		Backoff:    backoff,
		// A thousand ingress connections at once arrive faster than a
		// loaded test machine accepts them.
		Config:  tunnel.Config{AcceptBacklog: 2048},
		Handler: a.relay(upstream),
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { defer close(a.done); _ = a.c.Run(ctx) }()
	t.Cleanup(a.stop)
	testtools.Eventually(t, 20*time.Second, name+"'s tunnel to come up", func() bool { return a.c.State().Connected })
	return a
}

// relay is the agent's stream handler: dial the gateway's server, accept
// the stream, relay both ways with half-closes, as the gateway agent does.
func (a *testAgent) relay(upstream string) func(*tunnel.Stream) {
	return func(st *tunnel.Stream) {
		a.mu.Lock()
		a.inits = append(a.inits, st.Initiator())
		a.mu.Unlock()
		up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
		if err != nil {
			_ = st.Ack(false, "upstream unreachable")
			return
		}
		defer up.Close()
		if err := st.Ack(true, ""); err != nil {
			return
		}
		relay.Conns(context.Background(), st, up, relay.Counts{})
	}
}

func (a *testAgent) initiators() []tunnel.Initiator {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]tunnel.Initiator(nil), a.inits...)
}

// stop ends the client and waits for it.
func (a *testAgent) stop() {
	a.cancel()
	<-a.done
}

// curlResult is one curl run through the cloud's HTTPS port.
type curlResult struct {
	code    int
	body    string
	verbose string // curl -v's stderr: the certificate's subject and issuer
}

// curlTLS fetches https://host:PORT/path with real curl, host resolved to
// loopback, trusting only cacert.
func curlTLS(t *testing.T, c *cloud, host, path, cacert string) curlResult {
	t.Helper()
	r, err := tryCurlTLS(t, c, host, path, cacert)
	if err != nil {
		t.Fatalf("curl %s%s: %v\n%s", host, path, err, r.verbose)
	}
	return r
}

func tryCurlTLS(t *testing.T, c *cloud, host, path, cacert string) (curlResult, error) {
	t.Helper()
	curl := testtools.Binary(t, "curl", "curl")
	cmd := exec.Command(curl, "-sS", "-v", "--max-time", "20", "--cacert", cacert,
		"--resolve", fmt.Sprintf("%s:%d:%s", host, c.https, c.host()),
		"-o", "-", "-w", "\n%{http_code}", fmt.Sprintf("https://%s:%d%s", host, c.https, path))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.String()
	r := curlResult{verbose: stderr.String()}
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		r.code, _ = strconv.Atoi(strings.TrimSpace(out[i+1:]))
		r.body = out[:i]
	}
	return r, err
}

// certLine returns the "subject:" or "issuer:" line of curl -v's
// certificate dump.
func (r curlResult) certLine(field string) string {
	for _, l := range strings.Split(r.verbose, "\n") {
		if l = strings.TrimSpace(strings.TrimPrefix(l, "*")); strings.HasPrefix(l, field+":") {
			return l
		}
	}
	return ""
}

// dialGateway opens a TLS connection to name through the cloud's HTTPS
// port, verifying the gateway's own certificate.
func dialGateway(t *testing.T, c *cloud, name string, pool *x509.CertPool) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", c.https),
		&tls.Config{ServerName: name + ".box.test", RootCAs: pool})
}

// keptConnGetter returns a function that sends GET path for host on conn,
// one request after another on the same kept connection, and returns the
// body: the tests that must see one relayed connection survive a reload.
func keptConnGetter(t *testing.T, conn net.Conn, host string) func(path string) string {
	br := bufio.NewReader(conn)
	return func(path string) string {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s on the relayed connection: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
}

// adminMetrics returns the cloud's Prometheus metrics text.
func adminMetrics(t *testing.T, c *cloud) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/metrics", net.JoinHostPort(c.host(), strconv.Itoa(c.admin))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue returns the value of the sample named series (with its
// labels, as printed) in Prometheus text, or -1.
func metricValue(text, series string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return -1
}
