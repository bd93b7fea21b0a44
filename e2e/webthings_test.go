package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"
	_ "modernc.org/sqlite"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
	"github.com/gatehouse-project/gatehouse/internal/testtools/smtptest"
)

// webthingsCaddyfile is a cloud as a WebThings operator runs it: the
// compatible API at api.box.test, mail through SMTP, the zone's DNS (where
// the CA validates DNS-01), and the PageKite frontend on the HTTPS port
// (a token_seal_key, and the gatehouse listener wrapper before tls).
const webthingsCaddyfile = `{
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
				open_timeout 5s
			}
			tls
		}
	}
	gatehouse {
		zone box.test
		storage sqlite %DIR%/registry.db
		token_seal_key {env.GATEHOUSE_SEAL_KEY}
		dns {
			listen udp/127.0.0.1:%DNS% tcp/127.0.0.1:%DNS%
			nameserver ns1.box.test 127.0.0.1
			tunnel_address 192.0.2.10
			rrl off
		}
		email {
			smtp %SMTP%
			from "Gatehouse <noreply@box.test>"
			tls none
			api_url https://api.box.test:%HTTPS%
		}
	}
}
api.box.test {
	gatehouse
}
*.box.test {
	gatehouse offline
}
`

// legoUser is the ACME account of the gateway's client.
type legoUser struct {
	key crypto.Signer
	reg *acme.ExtendedAccount
}

func (u *legoUser) GetEmail() string                       { return "" }
func (u *legoUser) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.Signer           { return u.key }

// dnsconfigProvider solves DNS-01 as the WebThings gateway does: it hands
// the TXT value to /dnsconfig with the gateway's token, and removes
// nothing afterwards. lego calls it, so it reports errors rather than
// failing the test.
type dnsconfigProvider struct {
	c     *cloud
	token string
	set   []string // the values set, in order
}

func (p *dnsconfigProvider) Present(ctx context.Context, domain, _, keyAuth string) error {
	value := dns01.GetChallengeInfo(ctx, domain, keyAuth).Value
	code, body, err := p.c.tryCurl("api.box.test", "/dnsconfig?token="+url.QueryEscape(p.token)+"&challenge="+url.QueryEscape(value))
	if err != nil || code != 200 {
		return fmt.Errorf("/dnsconfig: %d %s %v", code, body, err)
	}
	p.set = append(p.set, value)
	return nil
}

func (p *dnsconfigProvider) CleanUp(context.Context, string, string, string) error { return nil }

// Timeout shortens lego's propagation polling: the record is in the
// cloud's DNS as soon as /dnsconfig answers.
func (p *dnsconfigProvider) Timeout() (timeout, interval time.Duration) {
	return 20 * time.Second, 200 * time.Millisecond
}

// obtainViaDNSConfig gets a certificate for fqdn from the ACME CA at
// directory (HTTPS under caRoot) with lego, the challenge set through
// /dnsconfig, and returns it as a TLS certificate (chain and key).
func obtainViaDNSConfig(t *testing.T, c *cloud, directory, caRoot, token, fqdn string) (tls.Certificate, *dnsconfigProvider) {
	t.Helper()
	// lego asks "recursive nameservers" for the record and for CNAMEs at
	// the challenge name: here that is the cloud's DNS, the zone's only
	// server.
	opts := dns01.NewOptions()
	opts.RecursiveNameservers = []string{fmt.Sprintf("127.0.0.1:%d", c.dns)}
	opts.Timeout = 5 * time.Second
	prev := dns01.DefaultClient()
	dns01.SetDefaultClient(dns01.NewClient(opts))
	t.Cleanup(func() { dns01.SetDefaultClient(prev) })
	// lego logs to stdout; keep it for a failure.
	logs, prevLog := new(logBuffer), legolog.Default()
	legolog.SetDefault(slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(func() {
		legolog.SetDefault(prevLog)
		if t.Failed() {
			logs.mu.Lock()
			t.Logf("lego log:\n%s", logs.b.String())
			logs.mu.Unlock()
		}
	})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u := &legoUser{key: key}
	cfg := lego.NewConfig(u)
	cfg.CADirURL = directory
	cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: certPool(t, caRoot)},
	}}
	client, err := lego.NewClient(cfg)
	if err != nil {
		t.Fatalf("ACME client: %v", err)
	}
	prov := &dnsconfigProvider{c: c, token: token}
	if err := client.Challenge.SetDNS01Provider(prov, dns01.DisableAuthoritativeNssPropagationRequirement()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if u.reg, err = client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
		t.Fatalf("ACME account: %v", err)
	}
	res, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{fqdn}, Bundle: true, KeyType: certcrypto.EC256})
	if err != nil {
		t.Fatalf("certificate for %s from Pebble through /dnsconfig and the cloud's DNS: %v", fqdn, err)
	}
	pair, err := tls.X509KeyPair(res.Certificate, res.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pair, prov
}

// writeOriginalDB writes an original registration server's SQLite
// database (its schema, as the importer's tests keep it) holding one
// verified owner and the gateway name with token.
func writeOriginalDB(t *testing.T, name, token string) string {
	t.Helper()
	schema, err := os.ReadFile("../modules/registry/importer/testdata/original-schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "domains.sqlite3")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stmts := testtools.SQLStatements(string(schema))
	stmts = append(stmts,
		`INSERT INTO accounts (id, email, optout) VALUES (1, 'legacy-owner@example.com', FALSE)`,
		fmt.Sprintf(`INSERT INTO domains (id, name, account_id, token, description, timestamp, verified, mode, last_ip)
			VALUES (1, '%s.box.test.', 1, '%s', 'moved from the original server', %d, TRUE, 0, '203.0.113.7')`,
			name, token, time.Now().Add(-time.Hour).Unix()))
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("original database: %.60s: %v", s, err)
		}
	}
	return path
}

var (
	mailedVerifyLink = regexp.MustCompile(`https://api\.box\.test:\d+/verifyemail\?s=[A-Za-z0-9_%-]+`)
	mailedUUID       = regexp.MustCompile(`(?m)^\s*([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})\s*$`)
)

// The WebThings gateway's setup, as its own code makes the calls
// (certificate-manager.ts, tunnel-service.ts): a name typed with spaces
// and capitals, the email stored without mail and verified through the one
// /setemail mail, a certificate from an ACME CA (Pebble) with the DNS-01
// record set by /dnsconfig and served by the cloud's DNS, Debian's
// pagekite as the gateway's kite with the token as its secret, curl seeing
// the gateway's own certificate through the cloud, and /ping. Then a new
// gateway reclaims the name with the mailed token typed in upper case (the
// old kite is dropped, the owner's verified address stays), and last a
// gateway of an original registration server, imported with the built
// binary's command, connects with its old token, and its owner can
// reclaim it.
func TestWebThings(t *testing.T) {
	began := time.Now()
	smtp := smtptest.Start(t)
	cfg := strings.ReplaceAll(webthingsCaddyfile, "%SMTP%", smtp.Addr())
	c := startCloud(t, cfg, kiteSealKey)
	pki := newTestPKI(t)
	peb := startPebble(t, pki, c.dns, 0)
	t.Logf("cloud and Pebble up after %v", time.Since(began).Round(time.Millisecond))

	// Subscribe as the setup page does: the name as typed, with the email.
	code, sub := c.api("/subscribe?name=" + url.QueryEscape(" MyHome ") + "&email=" + url.QueryEscape("owner@example.com"))
	if code != 200 || sub["name"] != "myhome" || sub["token"] == nil {
		t.Fatalf("subscribe with the name as typed: %d %v", code, sub)
	}
	token := sub["token"].(string)

	// /setemail sends the one verification mail (/subscribe sent none:
	// counted below, once the certificate phase has given a stray mail
	// time to arrive).
	if code, body := c.api("/setemail?token=" + url.QueryEscape(token) + "&email=" + url.QueryEscape("owner@example.com") + "&optout=0"); code != 200 {
		t.Fatalf("setemail: %d %v", code, body)
	}
	link := mailedVerifyLink.FindString(smtp.NextText(t, "owner@example.com"))
	if link == "" {
		t.Fatal("setemail: no verification link in the mail")
	}
	u, _ := url.Parse(link)
	if code, body := c.curl("api.box.test", u.RequestURI()); code != 200 || !strings.Contains(string(body), "Email verified") {
		t.Fatalf("following the verification link: %d %s", code, body)
	}

	// A certificate for myhome.box.test from Pebble, validated through
	// the TXT record /dnsconfig set in the cloud's DNS.
	pair, prov := obtainViaDNSConfig(t, c, peb.directory, pki.rootPEM, token, "myhome.box.test")
	leaf := verifyChain(t, pair.Certificate, "myhome.box.test", peb.rootFile)
	if len(prov.set) != 1 {
		t.Fatalf("dnsconfig: %d challenges set, want 1", len(prov.set))
	}
	// The record /dnsconfig set is the cloud's (the gateway never removes
	// it; Pebble and lego's own check read it there).
	if got := c.dig("+short", "_acme-challenge.myhome.box.test", "TXT"); !slices.Contains(got, `"`+prov.set[0]+`"`) {
		t.Fatalf("_acme-challenge.myhome.box.test TXT: %v, want %q", got, prov.set[0])
	}
	t.Logf("certificate after %v", time.Since(began).Round(time.Millisecond))

	// The gateway's own HTTPS server with that certificate, reached
	// through the kite.
	srv := gatewayServer(t, gatewayCert{cert: pair}, "hello from myhome")
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	kite := startKite(t, c, "myhome", port, token)
	kite.waitLog(t, "connect=", 30*time.Second)
	var r curlResult
	testtools.Eventually(t, 20*time.Second, "myhome's answer through its kite", func() bool {
		var err error
		// Trusting only Pebble's root: the cloud's own certificates
		// would not verify.
		r, err = tryCurlTLS(t, c, "myhome.box.test", "/", peb.rootFile)
		return err == nil && r.code == 200
	})
	if r.body != "hello from myhome (path /)\n" {
		t.Fatalf("curl https://myhome.box.test/: %q", r.body)
	}
	conn, err := dialGateway(t, c, "myhome", certPool(t, peb.rootFile))
	if err != nil {
		t.Fatalf("TLS to myhome through the cloud: %v", err)
	}
	served := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if !served.Equal(leaf) {
		t.Fatalf("through the cloud myhome serves %v (serial %v), not its Pebble certificate (serial %v)", served.DNSNames, served.SerialNumber, leaf.SerialNumber)
	}
	// Once the kite is up the gateway pings.
	if code, body := c.api("/ping?token=" + url.QueryEscape(token)); code != 200 {
		t.Fatalf("ping: %d %v", code, body)
	}
	if got := c.dig("+short", "myhome.box.test", "A"); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Fatalf("myhome.box.test A: %v", got)
	}
	t.Logf("kite serving after %v", time.Since(began).Round(time.Millisecond))

	// Reclaim from a new gateway's setup page: /reclaim with the name as
	// typed, then /subscribe with the mailed token as the user types it.
	if n := smtp.Received(); n != 1 {
		t.Fatalf("%d mails after subscribe and setemail, want exactly one", n)
	}
	if code, body := c.api("/reclaim?name=" + url.QueryEscape(" MyHome ")); code != 200 {
		t.Fatalf("reclaim: %d %v", code, body)
	}
	mail := smtp.NextText(t, "owner@example.com")
	m := mailedUUID.FindStringSubmatch(mail)
	if m == nil {
		t.Fatalf("reclaim: no lowercase UUID in the mail:\n%s", mail)
	}
	code, re := c.api("/subscribe?name=" + url.QueryEscape(" MyHome ") + "&email=" + url.QueryEscape("owner@example.com") +
		"&reclamationToken=" + url.QueryEscape(strings.ToUpper(m[1])))
	if code != 200 || re["name"] != "myhome" || re["token"] == nil || re["token"] == token {
		t.Fatalf("subscribe with the reclamation token in upper case: %d %v", code, re)
	}
	newToken := re["token"].(string)
	if code, _ := c.api("/ping?token=" + url.QueryEscape(token)); code != 404 {
		t.Fatalf("the replaced token still pings: %d", code)
	}
	// A reclaiming gateway sends no /setemail: the owner's verified
	// address must stay, or the name could never be reclaimed again.
	if code, info := c.api("/info?token=" + url.QueryEscape(newToken)); code != 200 || info["email"] != "owner@example.com" || info["email_verified"] != true {
		t.Fatalf("after the reclaim: %d %v", code, info)
	}
	// The old kite's tunnel ends with its token (PyPagekite retries a
	// frontend only a minute after its last connect, and its token no
	// longer signs); the new gateway's kite takes the name (while the old
	// kite held it, the new one would be told Duplicate).
	testtools.Eventually(t, 10*time.Second, "the old kite's tunnel to be dropped", func() bool {
		return countLines(c.logs(), "tunnel session dropped", `"myhome"`, "gateway token replaced") == 1
	})
	newKite := startKite(t, c, "myhome", port, newToken)
	newKite.waitLog(t, "connect=", 30*time.Second)
	if strings.Contains(newKite.log(), "Duplicate") {
		t.Fatalf("the new gateway's kite was told Duplicate:\n%s", newKite.log())
	}
	kite.kill()
	testtools.Eventually(t, 20*time.Second, "myhome's answer through the new kite", func() bool {
		r, err := tryCurlTLS(t, c, "myhome.box.test", "/reclaimed", peb.rootFile)
		return err == nil && r.code == 200 && r.body == "hello from myhome (path /reclaimed)\n"
	})
	if code, body := c.api("/ping?token=" + url.QueryEscape(newToken)); code != 200 {
		t.Fatalf("ping with the new token: %d %v", code, body)
	}
	newKite.kill()
	t.Logf("reclaimed after %v", time.Since(began).Round(time.Millisecond))

	// Import a gateway of an original registration server with the
	// binary's own command, into this cloud's store; a SQLite cloud is
	// restarted after it (README).
	const legacyToken = "5b9e2c4a-7d1f-4a3b-9c8e-0f1a2b3c4d5e"
	orig := writeOriginalDB(t, "legacy", legacyToken)
	imp := exec.Command(caddyBinary(t), "gatehouse", "import-registration-server", "--from", "sqlite:"+orig,
		"--config", "Caddyfile", "--adapter", "caddyfile")
	imp.Dir = c.dir
	imp.Env = append(append(os.Environ(), cloudtest.CaddyEnv(c.dir)...), kiteSealKey)
	out, err := imp.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "imported 1, already present 0, skipped 0") {
		t.Fatalf("caddy gatehouse import-registration-server: %v\n%s", err, out)
	}
	c.restart()
	if got := c.dig("+short", "legacy.box.test", "A"); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Fatalf("imported legacy.box.test A: %v", got)
	}
	legacyCert := newGatewayCert(t, "legacy")
	legacySrv := gatewayServer(t, legacyCert, "hello from legacy")
	legacy := startKite(t, c, "legacy", legacySrv.Listener.Addr().(*net.TCPAddr).Port, legacyToken)
	legacy.waitLog(t, "connect=", 30*time.Second)
	testtools.Eventually(t, 20*time.Second, "the imported gateway's answer through its kite", func() bool {
		var err error
		r, err = tryCurlTLS(t, c, "legacy.box.test", "/", legacyCert.file)
		return err == nil && r.code == 200
	})
	if r.body != "hello from legacy (path /)\n" || !strings.Contains(r.certLine("subject"), legacyCert.org) {
		t.Fatalf("imported gateway: %q from %q", r.body, r.certLine("subject"))
	}
	if code, body := c.api("/ping?token=" + legacyToken); code != 200 {
		t.Fatalf("ping with the imported token: %d %v", code, body)
	}
	// The imported owner's verified address came along: the name can be
	// reclaimed from a setup page.
	if code, body := c.api("/reclaim?name=Legacy"); code != 200 {
		t.Fatalf("reclaiming the imported gateway: %d %v", code, body)
	}
	if mail := smtp.NextText(t, "legacy-owner@example.com"); !mailedUUID.MatchString(mail) {
		t.Fatalf("reclaiming the imported gateway: no UUID in the mail:\n%s", mail)
	}
	t.Logf("imported gateway serving after %v", time.Since(began).Round(time.Millisecond))
}
