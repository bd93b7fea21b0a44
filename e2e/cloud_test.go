package e2e

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/smtptest"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
)

const cloudCaddyfile = `{
	admin 127.0.0.1:%ADMIN%
	http_port %HTTP%
	https_port %HTTPS%
	local_certs
	skip_install_trust
	servers {
		trusted_proxies static 127.0.0.2/32
		client_ip_headers X-Forwarded-For
	}
	gatehouse {
		zone box.test
		storage %STORAGE%
		expire_after %EXPIRE%
		dns {
			listen udp/127.0.0.1:%DNS% tcp/127.0.0.1:%DNS%
			nameserver ns1.box.test 127.0.0.1
			tunnel_address 192.0.2.10 2001:db8::10
			rrl off
		}
		%EMAIL%
	}
}
api.box.test {
	gatehouse
}
`

type cloudOptions struct {
	storage string // "sqlite" or a postgres storage line
	expire  string
	smtp    *smtptest.Server
}

func cloudConfig(o cloudOptions) string {
	storage := o.storage
	if storage == "" || storage == "sqlite" {
		storage = "sqlite %DIR%/registry.db"
	}
	expire := o.expire
	if expire == "" {
		expire = "7d"
	}
	email := ""
	if o.smtp != nil {
		email = fmt.Sprintf(`email {
			smtp %s
			from "Gatehouse <noreply@box.test>"
			tls none
			api_url https://api.box.test:%%HTTPS%%
		}`, o.smtp.Addr())
	}
	return strings.NewReplacer("%STORAGE%", storage, "%EXPIRE%", expire, "%EMAIL%", email).Replace(cloudCaddyfile)
}

// postgresStorage returns a storage line for a fresh schema of the test
// database, shared by every cloud started with it.
func postgresStorage(t *testing.T) string {
	return fmt.Sprintf("postgres %q", postgresSchemaDSN(t))
}

// postgresSchemaDSN returns a DSN whose search_path is a fresh schema,
// dropped when the test ends.
func postgresSchemaDSN(t *testing.T) string {
	dsn, schema := teststore.Postgres(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	psql := testtools.Binary(t, "psql", "postgresql-client")
	if out, err := exec.Command(psql, dsn, "-qc", "CREATE SCHEMA "+schema).CombinedOutput(); err != nil {
		t.Fatalf("create schema: %v %s", err, out)
	}
	return u.String()
}

func TestCloudRegistrationAndDNS(t *testing.T) {
	for _, driver := range teststore.Drivers {
		t.Run(driver, func(t *testing.T) {
			storage := "sqlite"
			if driver == "postgres" {
				storage = postgresStorage(t)
			}
			smtp := smtptest.Start(t)
			c := startCloud(t, cloudConfig(cloudOptions{storage: storage, smtp: smtp}))

			code, sub := c.api("/subscribe?name=myhome&desc=Home")
			if code != 200 || sub["name"] != "myhome" {
				t.Fatalf("subscribe: %d %v", code, sub)
			}
			token := sub["token"].(string)
			if got := c.dig("+short", "myhome.box.test", "A"); !slices.Equal(got, []string{"192.0.2.10"}) {
				t.Fatalf("tunnel-mode A: %v", got)
			}
			if got := c.dig("+short", "MyHome.Box.Test", "AAAA"); !slices.Equal(got, []string{"2001:db8::10"}) {
				t.Fatalf("tunnel-mode AAAA: %v", got)
			}
			if code, _ := c.api("/ping?token=" + token + "&local_ip=192.168.1.5"); code != 200 {
				t.Fatalf("ping: %d", code)
			}
			if got := c.dig("+short", "local.myhome.box.test", "A"); !slices.Equal(got, []string{"192.168.1.5"}) {
				t.Fatalf("local A: %v", got)
			}
			if code, _ := c.api("/dnsconfig?token=" + token + "&challenge=abc123"); code != 200 {
				t.Fatalf("dnsconfig: %d", code)
			}
			if got := c.dig("+short", "_acme-challenge.myhome.box.test", "TXT"); !slices.Equal(got, []string{`"abc123"`}) {
				t.Fatalf("challenge TXT: %v", got)
			}

			// Dynamic DNS: the name follows the client address that Caddy
			// reports, which honours X-Forwarded-For only from the trusted proxy.
			code, dyn := c.api("/subscribe?name=dyn&mode=dynamic")
			if code != 200 {
				t.Fatalf("subscribe dynamic: %d %v", code, dyn)
			}
			dtoken := dyn["token"].(string)
			c.api("/ping?token="+dtoken, "--interface", "127.0.0.2", "-H", "X-Forwarded-For: 203.0.113.7")
			if got := c.dig("+short", "dyn.box.test", "A"); !slices.Equal(got, []string{"203.0.113.7"}) {
				t.Fatalf("dynamic A behind the trusted proxy: %v", got)
			}
			code, disc := c.api("/v1/discover", "--interface", "127.0.0.2", "-H", "X-Forwarded-For: 203.0.113.7")
			if code != 200 || !strings.Contains(fmt.Sprint(disc["gateways"]), "dyn") {
				t.Fatalf("discover: %d %v", code, disc)
			}
			c.api("/ping?token="+dtoken, "-H", "X-Forwarded-For: 198.51.100.66")
			if got := c.dig("+short", "dyn.box.test", "A"); !slices.Equal(got, []string{"127.0.0.1"}) {
				t.Fatalf("an untrusted X-Forwarded-For was believed: %v", got)
			}

			if s := testtools.DigStatus(t, c.dns, "nobody.box.test", "A"); s != "NXDOMAIN" {
				t.Fatalf("unknown name: %s", s)
			}
			if s := testtools.DigStatus(t, c.dns, "example.com", "A"); s != "REFUSED" {
				t.Fatalf("outside the zone: %s", s)
			}

			// Email verification and reclamation, through a real SMTP server.
			if code, body := c.api("/setemail?token=" + token + "&email=owner@example.com"); code != 200 {
				t.Fatalf("setemail: %d %v", code, body)
			}
			link := regexp.MustCompile(`https://api\.box\.test:\d+/verifyemail\?s=[A-Za-z0-9_%-]+`).FindString(smtp.NextText(t, "owner@example.com"))
			if link == "" {
				t.Fatal("no verification link in the mail")
			}
			u, _ := url.Parse(link)
			if code, body := c.curl("api.box.test", u.RequestURI()); code != 200 || !strings.Contains(string(body), "Email verified") {
				t.Fatalf("following the link: %d %s", code, body)
			}
			if code, body := c.api("/reclaim?name=myhome"); code != 200 {
				t.Fatalf("reclaim: %d %v", code, body)
			}
			mailText := smtp.NextText(t, "owner@example.com")
			// The compatible surface mails a lowercase UUID (all the
			// WebThings setup page accepts); it is taken in any case.
			rt := regexp.MustCompile(`(?m)^\s*([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})\s*$`).FindStringSubmatch(mailText)
			if rt == nil {
				t.Fatalf("no reclamation token in the mail:\n%s", mailText)
			}
			code, re := c.api("/subscribe?name=myhome&reclamationToken=" + strings.ToUpper(rt[1]))
			if code != 200 || re["token"] == token {
				t.Fatalf("reclaim with the mailed token: %d %v", code, re)
			}
			if code, _ := c.api("/ping?token=" + token); code != 404 {
				t.Fatalf("the old token still works: %d", code)
			}

			// State survives a restart, and DNS answers from it at once.
			c.restart()
			if got := c.dig("+short", "local.myhome.box.test", "A"); !slices.Equal(got, []string{"192.168.1.5"}) {
				t.Fatalf("after restart: %v", got)
			}
			if code, _ := c.api("/unsubscribe?token=" + re["token"].(string)); code != 200 {
				t.Fatalf("unsubscribe: %d", code)
			}
			if s := testtools.DigStatus(t, c.dns, "myhome.box.test", "A"); s != "NXDOMAIN" {
				t.Fatalf("unsubscribed name: %s", s)
			}
		})
	}
}

func TestCloudExpiry(t *testing.T) {
	c := startCloud(t, cloudConfig(cloudOptions{expire: "1s"}))
	_, sub := c.api("/subscribe?name=sleepy")
	token := sub["token"].(string)
	c.api("/ping?token=" + token)
	if got := c.dig("+short", "sleepy.box.test", "A"); len(got) != 1 {
		t.Fatalf("before expiry: %v", got)
	}
	testtools.Eventually(t, 10*time.Second, "expiry to remove the name from DNS", func() bool {
		return testtools.DigStatus(t, c.dns, "sleepy.box.test", "A") == "NXDOMAIN"
	})
	if code, _ := c.api("/ping?token=" + token); code != 200 {
		t.Fatalf("ping after expiry: %d", code)
	}
	if got := c.dig("+short", "sleepy.box.test", "A"); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Fatalf("a ping did not bring the name back: %v", got)
	}
}

// Two cloud processes on one PostgreSQL database: a change made through
// one is answered by the other's DNS within a second.
func TestCloudTwoNodesSharePostgres(t *testing.T) {
	storage := postgresStorage(t)
	a := startCloud(t, cloudConfig(cloudOptions{storage: storage}))
	b := startCloud(t, cloudConfig(cloudOptions{storage: storage}))
	_, sub := a.api("/subscribe?name=shared")
	token := sub["token"].(string)
	start := time.Now()
	testtools.Eventually(t, time.Second, "node b to answer for a name registered on node a", func() bool {
		return testtools.DigStatus(t, b.dns, "shared.box.test", "A") == "NOERROR"
	})
	a.api("/ping?token=" + token + "&local_ip=10.1.2.3")
	testtools.Eventually(t, time.Second, "node b to see node a's ping", func() bool {
		return slices.Equal(b.dig("+short", "local.shared.box.test", "A"), []string{"10.1.2.3"})
	})
	a.api("/unsubscribe?token=" + token)
	testtools.Eventually(t, time.Second, "node b to drop an unsubscribed name", func() bool {
		return testtools.DigStatus(t, b.dns, "shared.box.test", "A") == "NXDOMAIN"
	})
	t.Logf("three changes propagated in %s", time.Since(start).Round(time.Millisecond))
}

// A config reload keeps the DNS sockets: queries are answered across it.
func TestCloudReloadKeepsDNS(t *testing.T) {
	c := startCloud(t, cloudConfig(cloudOptions{}))
	c.api("/subscribe?name=steady")
	cfg := filepath.Join(c.dir, "Caddyfile")
	b, _ := os.ReadFile(cfg)
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "expire_after 7d", "expire_after 8d", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(caddyBinary(t), "reload", "--config", cfg, "--adapter", "caddyfile", "--address", fmt.Sprintf("127.0.0.1:%d", c.admin)).CombinedOutput()
	if err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if got := c.dig("+short", "steady.box.test", "A"); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Fatalf("after reload: %v", got)
	}
	if got := c.dig("+tcp", "+short", "steady.box.test", "A"); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Fatalf("after reload, over TCP: %v", got)
	}
	// Both configurations served UDP with the batched loop: Caddy's
	// reload-safe sockets unwrap to the *net.UDPConn it needs.
	if n := strings.Count(c.logs(), `"udp":1,"udp_batched":1`); n < 2 {
		t.Errorf("%d of 2 configurations served UDP batched:\n%s", n, c.logs())
	}
}

// Every example configuration adapts and validates (provisioning included).
func TestCaddyfileExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob("../caddyfile-examples/*.Caddyfile")
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	dsn := postgresSchemaDSN(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			abs, _ := filepath.Abs(f)
			cmd := exec.Command(caddyBinary(t), "adapt", "--config", abs, "--adapter", "caddyfile", "--validate")
			dir := t.TempDir()
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GATEHOUSE_PG="+dsn, "GATEHOUSE_DATA="+dir, "SMTP_PASSWORD=x", "NODE_NAME=node-1", "NODE_ADDR=127.0.0.1",
				"XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("caddy adapt --validate %s: %v\n%s", f, err, out)
			}
		})
	}
}
