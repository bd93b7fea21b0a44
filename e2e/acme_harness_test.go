package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/dnsprovider"
)

// loopbackClient is an HTTP client that trusts the PEM roots in rootFiles
// and dials every name under the test zone (api.box.test, acme.box.test,
// …) on 127.0.0.1, keeping the port: the test machine's resolver knows
// nothing of box.test, and the URLs, the SNI and the certificates stay
// those of the real names.
func loopbackClient(t *testing.T, rootFiles ...string) *http.Client {
	t.Helper()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: certPool(t, rootFiles...)},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if host == "box.test" || strings.HasSuffix(host, ".box.test") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// certPool reads the PEM certificates of files into a pool.
func certPool(t *testing.T, files ...string) *x509.CertPool {
	t.Helper()
	pool, err := testcert.PoolFromFiles(files...)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// provider returns the libdns provider of the cloud's API, as a gateway
// (or the operator) with token.
func (c *cloud) provider(token string) *dnsprovider.Provider {
	return &dnsprovider.Provider{
		Endpoint:   fmt.Sprintf("https://api.box.test:%d", c.https),
		Token:      token,
		HTTPClient: loopbackClient(c.t, c.rootCA()),
	}
}

// testPKI stands in for the public web PKI: a root that a gateway's Caddy
// trusts as its system roots (SSL_CERT_FILE), and that signs Pebble's own
// HTTPS certificate and the cloud API's certificate for 127.0.0.1, which
// the gateway calls.
type testPKI struct {
	dir     string
	rootPEM string // the root certificate
	// leafCert and leafKey are a certificate for 127.0.0.1 and
	// localhost signed by the root.
	leafCert, leafKey string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.rootPEM = filepath.Join(p.dir, "root.pem")
	p.leafCert = filepath.Join(p.dir, "localhost.pem")
	p.leafKey = filepath.Join(p.dir, "localhost-key.pem")

	root := testcert.MustCA(t, testcert.Options{
		Serial:  big.NewInt(1),
		Subject: pkix.Name{CommonName: "Gatehouse test root"},
	})
	leaf := root.MustIssue(t, testcert.Options{
		Serial:      big.NewInt(2),
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	root.MustWrite(t, p.rootPEM, "")
	leaf.MustWrite(t, p.leafCert, p.leafKey)
	return p
}

// pebbleBinary builds Pebble, the ACME test CA pinned as a tool in go.mod,
// once per test run.
func pebbleBinary(t *testing.T) string {
	t.Helper()
	return cloudtest.MustBuild(t, "github.com/letsencrypt/pebble/v2/cmd/pebble")
}

// pebble is one running Pebble, whose DNS-01 lookups go to a Gatehouse
// DNS server.
type pebble struct {
	t   *testing.T
	pki *testPKI
	// directory is the ACME directory URL.
	directory string
	// rootFile holds the root that Pebble issues certificates under.
	rootFile string
	log      *bytes.Buffer
	logMu    *sync.Mutex
}

// startPebble runs Pebble until the test ends, validating DNS-01
// challenges against the DNS server on 127.0.0.1:dnsPort and issuing
// certificates valid for validity (0: Pebble's default of 90 days).
func startPebble(t *testing.T, pki *testPKI, dnsPort int, validity time.Duration) *pebble {
	t.Helper()
	p := &pebble{t: t, pki: pki, log: new(bytes.Buffer), logMu: new(sync.Mutex)}
	dir := t.TempDir()
	listen, mgmt := freePort(t), freePort(t)
	var cfg struct {
		Pebble map[string]any `json:"pebble"`
	}
	cfg.Pebble = map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", listen),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":             pki.leafCert,
		"privateKey":              pki.leafKey,
		// HTTP-01 and TLS-ALPN-01 are never used; the ports only need
		// to be free ones.
		"httpPort":   freePort(t),
		"tlsPort":    freePort(t),
		"retryAfter": map[string]int{"authz": 1, "order": 1},
	}
	if validity > 0 {
		cfg.Pebble["profiles"] = map[string]any{"default": map[string]any{
			"description": "short-lived, for renewal tests", "validityPeriod": int(validity / time.Second),
		}}
	}
	b, _ := json.Marshal(cfg)
	conf := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pebbleBinary(t), "-config", conf, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort))
	cmd.Dir = dir
	// No sleeps before validation, no rejected nonces, and no reuse of
	// valid authorizations: every order, renewals included, goes through
	// a fresh DNS-01 challenge.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	w := lockedWriter{p.logMu, p.log}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pebble log:\n%s", p.logs())
		}
	})

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certPool(t, pki.rootPEM)}}}
	t.Cleanup(client.CloseIdleConnections)
	p.directory = fmt.Sprintf("https://127.0.0.1:%d/dir", listen)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("pebble exited at start:\n%s", p.logs())
		default:
		}
		if resp, err := client.Get(p.directory); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not start:\n%s", p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmt))
	if err != nil {
		t.Fatal(err)
	}
	root, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble root: %d %v", resp.StatusCode, err)
	}
	p.rootFile = filepath.Join(dir, "issuer-root.pem")
	if err := os.WriteFile(p.rootFile, root, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pebble) logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// acmeCloudCaddyfile is a cloud whose DNS answers api.box.test and
// acme.box.test with 127.0.0.1, which serves the API also on
// https://127.0.0.1 (a certificate from the test PKI, as a public one
// would be), runs Caddy's own ACME server with DNS-01 at acme.box.test, and
// accepts an operator token for the zone's own challenge. %DNSPORT% is
// chosen before the cloud starts, because Pebble must know it first.
//
// Its own names get certificates from Caddy's local CA site by site, with
// force_automate, rather than through local_certs: a site for *.box.test
// (the cloud's wildcard, in %EXTRA%) would otherwise serve them with the
// wildcard certificate, or put them under its automation policy, since a
// wildcard covers every name below it; the harness checks api.box.test
// against the local CA.
const acmeCloudCaddyfile = `{
	admin 127.0.0.1:%ADMIN%
	http_port %HTTP%
	https_port %HTTPS%
	skip_install_trust
	gatehouse {
		zone box.test
		storage %STORAGE%
		operator_token {env.GATEHOUSE_OPERATOR_TOKEN}
		%APPEXTRA%
		dns {
			listen udp/127.0.0.1:%DNSPORT% tcp/127.0.0.1:%DNSPORT%
			nameserver ns1.box.test 127.0.0.1
			tunnel_address 192.0.2.10 2001:db8::10
			api_address 127.0.0.1
			host acme 127.0.0.1
			rrl off
		}
	}
}
api.box.test {
	tls force_automate {
		issuer internal
	}
	gatehouse
}
127.0.0.1 {
	tls %LEAFCERT% %LEAFKEY%
	gatehouse
}
acme.box.test {
	tls force_automate {
		issuer internal
	}
	acme_server {
		challenges dns-01
		resolvers 127.0.0.1:%DNSPORT%
		allow_wildcard_names
	}
}
%EXTRA%
`

// acmeEnv is a cloud, the Pebble that validates against its DNS, and the
// test PKI they share.
type acmeEnv struct {
	cloud    *cloud
	pebble   *pebble
	pki      *testPKI
	operator string
}

type acmeOptions struct {
	storage  string // "sqlite" (default) or a postgres storage line
	validity time.Duration
	// extra is appended to the cloud's Caddyfile; %PEBBLE% and
	// %PEBBLEROOT% stand for Pebble's directory and the root of its HTTPS
	// certificate, besides the startCloud placeholders.
	extra string
	// appExtra is added inside the cloud's gatehouse { } options.
	appExtra string
}

// operatorTokenForTests is the cloud operator's token in the ACME tests.
const operatorTokenForTests = "gatehouse-e2e-operator-token-0123456789abcdef"

func startAcmeEnv(t *testing.T, o acmeOptions) *acmeEnv {
	t.Helper()
	e := &acmeEnv{pki: newTestPKI(t), operator: operatorTokenForTests}
	dnsPort := freePort(t)
	e.pebble = startPebble(t, e.pki, dnsPort, o.validity)
	storage := o.storage
	if storage == "" || storage == "sqlite" {
		storage = "sqlite %DIR%/registry.db"
	}
	cfg := strings.NewReplacer("%STORAGE%", storage, "%DNSPORT%", fmt.Sprint(dnsPort),
		"%LEAFCERT%", e.pki.leafCert, "%LEAFKEY%", e.pki.leafKey,
		"%PEBBLE%", e.pebble.directory, "%PEBBLEROOT%", e.pki.rootPEM).Replace(
		strings.NewReplacer("%EXTRA%", o.extra, "%APPEXTRA%", o.appExtra).Replace(acmeCloudCaddyfile))
	e.cloud = startCloud(t, cfg, "GATEHOUSE_OPERATOR_TOKEN="+e.operator)
	// The harness picked a DNS port of its own; dig must ask ours.
	e.cloud.dns = dnsPort
	return e
}

// subscribe registers name and returns its token.
func (e *acmeEnv) subscribe(name string) string {
	e.cloud.t.Helper()
	code, sub := e.cloud.api("/subscribe?name=" + name)
	if code != 200 {
		e.cloud.t.Fatalf("subscribe %s: %d %v", name, code, sub)
	}
	return sub["token"].(string)
}

// caddyProcess is a Caddy that is not the cloud: a gateway's.
type caddyProcess struct {
	t       *testing.T
	dir     string
	https   int
	log     *bytes.Buffer
	logMu   *sync.Mutex
	stopped chan struct{}
}

// startCaddy runs the Caddy binary on caddyfile (with %ADMIN%, %HTTP%,
// %HTTPS% and %DIR% replaced) until the test ends, once its admin endpoint
// answers.
func startCaddy(t *testing.T, caddyfile string, env ...string) *caddyProcess {
	t.Helper()
	p := &caddyProcess{t: t, dir: t.TempDir(), https: freePort(t), log: new(bytes.Buffer), logMu: new(sync.Mutex)}
	admin := freePort(t)
	r := strings.NewReplacer("%ADMIN%", fmt.Sprint(admin), "%HTTPS%", fmt.Sprint(p.https),
		"%HTTP%", fmt.Sprint(freePort(t)), "%DIR%", p.dir)
	if err := os.WriteFile(filepath.Join(p.dir, "Caddyfile"), []byte(r.Replace(caddyfile)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBinary(t), "run", "--config", "Caddyfile", "--adapter", "caddyfile")
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), cloudtest.CaddyEnv(p.dir)...)
	cmd.Env = append(cmd.Env, env...)
	w := lockedWriter{p.logMu, p.log}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.stopped = make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.stopped) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.stopped:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.stopped
		}
		if t.Failed() {
			t.Logf("gateway caddy log:\n%s", p.logs())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.stopped:
			t.Fatalf("caddy exited at start:\n%s", p.logs())
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/config/", admin))
		if err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not start:\n%s", p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *caddyProcess) logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// servedCertificate connects to 127.0.0.1:port with SNI name and returns
// the leaf certificate served, once it verifies against the roots in
// rootFile, waiting up to timeout for it.
func servedCertificate(t *testing.T, port int, name, rootFile string, timeout time.Duration) *x509.Certificate {
	t.Helper()
	roots := certPool(t, rootFile)
	var leaf *x509.Certificate
	var last error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		dialer := &net.Dialer{Timeout: 2 * time.Second}
		conn, err := tls.DialWithDialer(dialer, "tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{ServerName: name, RootCAs: roots})
		if err == nil {
			leaf = conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			return leaf
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("no certificate for %s verified by %s within %s: %v", name, filepath.Base(rootFile), timeout, last)
	return nil
}

// verifyChain checks that chain (leaf first, DER) is valid for name under
// the roots in rootFile.
func verifyChain(t *testing.T, chain [][]byte, name, rootFile string) *x509.Certificate {
	t.Helper()
	if len(chain) == 0 {
		t.Fatalf("%s: empty chain", name)
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: certPool(t, rootFile), Intermediates: inter}); err != nil {
		t.Fatalf("certificate for %s does not verify: %v", name, err)
	}
	return certs[0]
}

// challengeGone waits until no _acme-challenge TXT record is left at
// fqdn, in DNS and in the records API (read with the token that wrote
// them, in zone).
func (e *acmeEnv) challengeGone(ctx context.Context, fqdn, zone, token string) {
	t := e.cloud.t
	t.Helper()
	prov := e.cloud.provider(token)
	testtools.Eventually(t, 15*time.Second, "the challenge records of "+fqdn+" to be deleted", func() bool {
		if got := e.cloud.dig("+short", "_acme-challenge."+fqdn, "TXT"); len(got) != 0 {
			return false
		}
		recs, err := prov.GetRecords(ctx, zone)
		if err != nil {
			t.Fatalf("records of %s: %v", zone, err)
		}
		for _, r := range recs {
			if strings.HasPrefix(r.RR().Name, "_acme-challenge") {
				return false
			}
		}
		return true
	})
}

// isLoopback reports whether every address of ips is 127.0.0.1, for
// checks of the names the cloud's DNS answers.
func isLoopback(ips []string) bool {
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err != nil || a != netip.MustParseAddr("127.0.0.1") {
			return false
		}
	}
	return len(ips) > 0
}
