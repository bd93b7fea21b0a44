package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/libdns/libdns/libdnstest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
)

// libdns's own conformance suite, with the real provider against a running
// cloud: a gateway manages the records of its own name taken as a zone.
func TestLibdnsSuite(t *testing.T) {
	for _, driver := range teststore.Drivers {
		t.Run(driver, func(t *testing.T) {
			storage := "sqlite"
			if driver == "postgres" {
				storage = postgresStorage(t)
			}
			c := startCloud(t, cloudConfig(cloudOptions{storage: storage}))
			code, sub := c.api("/subscribe?name=suite")
			if code != 200 {
				t.Fatalf("subscribe: %d %v", code, sub)
			}
			suite := libdnstest.NewTestSuite(c.provider(sub["token"].(string)), "suite.box.test.")
			// The API serves A, AAAA, CNAME and TXT only (docs/api.md).
			suite.SkipRRTypes = map[string]bool{"MX": true, "SRV": true, "CAA": true, "NS": true, "SVCB": true, "HTTPS": true}
			suite.RunTests(t)
		})
	}
}

// countingProvider counts the challenge records the ACME client sets, to
// tell a DNS-01 validation from an authorization the CA reused.
type countingProvider struct {
	certmagic.DNSProvider
	appends atomic.Int32
}

func (p *countingProvider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p.appends.Add(int32(len(recs)))
	return p.DNSProvider.AppendRecords(ctx, zone, recs)
}

// logBuffer collects a library's logs, shown when the test fails.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) Sync() error { return nil }

// certMagicOptions configure an in-process ACME client as a gateway agent
// runs it.
type certMagicOptions struct {
	ca       string
	caRoots  *x509.CertPool
	provider certmagic.DNSProvider
	// dnsPort is the cloud's DNS server, the resolver of the propagation
	// checks.
	dnsPort int
	// resolver, when set, resolves the CA's host name.
	resolver string
	// renewCheck is how often certificates are checked for renewal.
	renewCheck time.Duration
	onEvent    func(event string, data map[string]any)
}

// newCertMagic returns a CertMagic config that obtains certificates from
// o.ca with DNS-01 only, through the Gatehouse libdns provider, and stops
// with the test.
func newCertMagic(t *testing.T, o certMagicOptions) *certmagic.Config {
	t.Helper()
	logs := new(logBuffer)
	logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), logs, zap.InfoLevel))
	t.Cleanup(func() {
		if t.Failed() {
			logs.mu.Lock()
			t.Logf("certmagic log:\n%s", logs.b.String())
			logs.mu.Unlock()
		}
	})
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		RenewCheckInterval: o.renewCheck,
		Logger:             logger,
	})
	t.Cleanup(cache.Stop)
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: t.TempDir()},
		Logger:  logger,
		// Test CAs have no OCSP responder.
		OCSP: certmagic.OCSPConfig{DisableStapling: true},
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			if o.onEvent != nil {
				o.onEvent(event, data)
			}
			return nil
		},
	})
	cfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:           o.ca,
		TrustedRoots: o.caRoots,
		Agreed:       true,
		// With an address, CertMagic never prompts for one on stdin.
		Email:                   "ops@example.org",
		DisableHTTPChallenge:    true,
		DisableTLSALPNChallenge: true,
		Resolver:                o.resolver,
		Logger:                  logger,
		DNS01Solver: &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider: o.provider,
			// The propagation check asks the cloud's DNS, where the
			// record must be before the CA is told to look.
			Resolvers:          []string{fmt.Sprintf("127.0.0.1:%d", o.dnsPort)},
			PropagationTimeout: 30 * time.Second,
			Logger:             logger,
		}},
	})}
	return cfg
}

// obtain gets a certificate for name, waiting at most two minutes, and
// checks it against the CA's root.
func obtain(t *testing.T, cfg *certmagic.Config, name, rootFile string) *x509.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := cfg.ObtainCertSync(ctx, name); err != nil {
		t.Fatalf("obtaining %s: %v", name, err)
	}
	cert, err := cfg.CacheManagedCertificate(ctx, name)
	if err != nil {
		t.Fatalf("loading %s: %v", name, err)
	}
	leaf := verifyChain(t, cert.Certificate.Certificate, strings.Replace(name, "*", "anyhost", 1), rootFile)
	if !slices.Equal(leaf.DNSNames, []string{name}) {
		t.Fatalf("certificate for %v, want %s", leaf.DNSNames, name)
	}
	return leaf
}

// A gateway agent: CertMagic with the Gatehouse provider gets NAME.ZONE and
// *.NAME.ZONE from Pebble, which validates them against the cloud's DNS;
// the challenge records are gone afterwards.
func TestAcmePebbleCertMagic(t *testing.T) {
	e := startAcmeEnv(t, acmeOptions{})
	token := e.subscribe("myhome")
	prov := &countingProvider{DNSProvider: e.cloud.provider(token)}
	cfg := newCertMagic(t, certMagicOptions{
		ca: e.pebble.directory, caRoots: certPool(t, e.pki.rootPEM), provider: prov, dnsPort: e.cloud.dns,
	})
	obtain(t, cfg, "myhome.box.test", e.pebble.rootFile)
	obtain(t, cfg, "*.myhome.box.test", e.pebble.rootFile)
	if n := prov.appends.Load(); n != 2 {
		t.Errorf("%d challenge records set, want one per certificate", n)
	}
	e.challengeGone(t.Context(), "myhome.box.test", "box.test.", token)
	// The name itself still answers as before.
	if got := e.cloud.dig("+short", "myhome.box.test", "A"); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Errorf("myhome A after issuance: %v", got)
	}
}

// The cloud's own ACME server (Caddy's acme_server with DNS-01 against the
// cloud's DNS) is the CA: a local demo needs nothing but this binary.
func TestAcmeServerCertificate(t *testing.T) {
	e := startAcmeEnv(t, acmeOptions{})
	token := e.subscribe("demo")
	// The client finds acme.box.test through the cloud's DNS, too.
	if got := e.cloud.dig("+short", "acme.box.test", "A"); !isLoopback(got) {
		t.Fatalf("acme.box.test A: %v", got)
	}
	cfg := newCertMagic(t, certMagicOptions{
		ca:       fmt.Sprintf("https://acme.box.test:%d/acme/local/directory", e.cloud.https),
		caRoots:  certPool(t, e.cloud.rootCA()),
		provider: e.cloud.provider(token),
		dnsPort:  e.cloud.dns,
		resolver: fmt.Sprintf("127.0.0.1:%d", e.cloud.dns),
	})
	obtain(t, cfg, "demo.box.test", e.cloud.rootCA())
	obtain(t, cfg, "*.demo.box.test", e.cloud.rootCA())
	e.challengeGone(t.Context(), "demo.box.test", "demo.box.test.", token)
}

// Short-lived certificates from Pebble: CertMagic's maintenance renews one
// through a new DNS-01 challenge before it expires.
func TestAcmeRenewal(t *testing.T) {
	const lifetime = 30 * time.Second
	e := startAcmeEnv(t, acmeOptions{validity: lifetime})
	token := e.subscribe("renew")
	prov := &countingProvider{DNSProvider: e.cloud.provider(token)}
	renewed := make(chan struct{}, 1)
	cfg := newCertMagic(t, certMagicOptions{
		ca: e.pebble.directory, caRoots: certPool(t, e.pki.rootPEM), provider: prov, dnsPort: e.cloud.dns,
		renewCheck: time.Second,
		onEvent: func(event string, data map[string]any) {
			if event == "cert_obtained" && data["renewal"] == true && data["identifier"] == "renew.box.test" {
				select {
				case renewed <- struct{}{}:
				default:
				}
			}
		},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := cfg.ManageSync(ctx, []string{"renew.box.test"}); err != nil {
		t.Fatal(err)
	}
	first, err := cfg.CacheManagedCertificate(ctx, "renew.box.test")
	if err != nil {
		t.Fatal(err)
	}
	if life := first.Leaf.NotAfter.Sub(first.Leaf.NotBefore); life > lifetime {
		t.Fatalf("certificate valid for %s, want a short-lived one", life)
	}
	select {
	case <-renewed:
	case <-time.After(2 * lifetime):
		t.Fatalf("no renewal within %s", 2*lifetime)
	}
	second, err := cfg.CacheManagedCertificate(ctx, "renew.box.test")
	if err != nil {
		t.Fatal(err)
	}
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the renewed certificate is the first one")
	}
	verifyChain(t, second.Certificate.Certificate, "renew.box.test", e.pebble.rootFile)
	// Pebble reuses no authorization: the renewal solved DNS-01 again.
	if n := prov.appends.Load(); n < 2 {
		t.Fatalf("%d challenge records set, want one per certificate", n)
	}
	e.challengeGone(ctx, "renew.box.test", "box.test.", token)
}

// A gateway that runs Caddy, from the same binary, with
// caddyfile-examples/gateway.Caddyfile: `tls { dns gatehouse … }` gets its
// certificates from Pebble through the cloud's API, and it serves the
// gateway's web app with them.
func TestAcmeGatewayCaddy(t *testing.T) {
	e := startAcmeEnv(t, acmeOptions{})
	token := e.subscribe("myhome")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the web app of %s", r.Host)
	}))
	t.Cleanup(app.Close)
	example, err := filepath.Abs("../caddyfile-examples/gateway.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	// The example as it is, imported under the global options of this
	// test: the CA (Pebble instead of Let's Encrypt, and the root of its
	// HTTPS certificate) and the resolver of the propagation checks.
	global := strings.NewReplacer("%PEBBLE%", e.pebble.directory, "%PEBBLEROOT%", e.pki.rootPEM,
		"%DNSPORT%", fmt.Sprint(e.cloud.dns), "%EXAMPLE%", example).Replace(`{
	admin 127.0.0.1:%ADMIN%
	http_port %HTTP%
	https_port %HTTPS%
	skip_install_trust
	acme_ca %PEBBLE%
	acme_ca_root %PEBBLEROOT%
	tls_resolvers 127.0.0.1:%DNSPORT%
}
import %EXAMPLE%
`)
	gw := startCaddy(t, global,
		"GATEHOUSE_DOMAIN=myhome.box.test",
		fmt.Sprintf("GATEHOUSE_ENDPOINT=https://127.0.0.1:%d", e.cloud.https),
		"GATEHOUSE_TOKEN="+token,
		"GATEHOUSE_UPSTREAM="+strings.TrimPrefix(app.URL, "http://"),
		// The API's certificate chains to the test PKI, which stands in
		// for the public roots.
		"SSL_CERT_FILE="+e.pki.rootPEM)
	leaf := servedCertificate(t, gw.https, "myhome.box.test", e.pebble.rootFile, 2*time.Minute)
	if !slices.Equal(leaf.DNSNames, []string{"myhome.box.test"}) {
		t.Fatalf("served certificate for %v", leaf.DNSNames)
	}
	leaf = servedCertificate(t, gw.https, "www.myhome.box.test", e.pebble.rootFile, 2*time.Minute)
	if !slices.Equal(leaf.DNSNames, []string{"*.myhome.box.test"}) {
		t.Fatalf("served certificate for %v", leaf.DNSNames)
	}
	client := loopbackClient(t, e.pebble.rootFile)
	resp, err := client.Get(fmt.Sprintf("https://myhome.box.test:%d/", gw.https))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello from the web app of myhome.box.test") {
		t.Fatalf("through the gateway: %d %s", resp.StatusCode, body)
	}
	e.challengeGone(t.Context(), "myhome.box.test", "box.test.", token)
}

// The cloud's own *.ZONE certificate, configured as in
// caddyfile-examples/wildcard.Caddyfile: its Caddy solves the challenge at
// _acme-challenge.ZONE through its own API on loopback with the operator
// token, which may write that name and nothing else. PostgreSQL holds the
// zone's records, as several nodes would share them.
func TestAcmeCloudWildcard(t *testing.T) {
	loopback := freePort(t)
	e := startAcmeEnv(t, acmeOptions{storage: postgresStorage(t), extra: strings.ReplaceAll(`http://127.0.0.1:%LOOPBACK% {
	bind 127.0.0.1
	gatehouse
}
*.box.test {
	tls {
		dns gatehouse {
			endpoint http://127.0.0.1:%LOOPBACK%
			token {env.GATEHOUSE_OPERATOR_TOKEN}
		}
		ca %PEBBLE%
		ca_root %PEBBLEROOT%
		resolvers 127.0.0.1:%DNSPORT%
	}
	respond "no gateway here" 404
}`, "%LOOPBACK%", fmt.Sprint(loopback))})
	leaf := servedCertificate(t, e.cloud.https, "offline.box.test", e.pebble.rootFile, 2*time.Minute)
	if !slices.Equal(leaf.DNSNames, []string{"*.box.test"}) {
		t.Fatalf("served certificate for %v", leaf.DNSNames)
	}
	// The API keeps its own certificate.
	if leaf := servedCertificate(t, e.cloud.https, "api.box.test", e.cloud.rootCA(), 10*time.Second); !slices.Equal(leaf.DNSNames, []string{"api.box.test"}) {
		t.Fatalf("api.box.test served a certificate for %v", leaf.DNSNames)
	}
	e.challengeGone(t.Context(), "box.test", "box.test.", e.operator)
	// A gateway's token cannot set the zone's challenge.
	token := e.subscribe("sneaky")
	_, err := e.cloud.provider(token).AppendRecords(t.Context(), "box.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "x"}})
	if err == nil || !strings.Contains(err.Error(), "OutsideSubtree") {
		t.Fatalf("a gateway wrote the zone's challenge: %v", err)
	}
}
