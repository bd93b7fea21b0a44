package e2e

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// lego's own acmedns provider, with an account file that names a gateway
// (user and subdomain: its name; password: its token) and the cloud's API
// as the acme-dns server, obtains NAME.ZONE and *.NAME.ZONE in one order
// from Pebble, which validates both against the cloud's DNS: the two
// values live at _acme-challenge.NAME.ZONE together. /register is off by
// default: the gateway came from /subscribe.
func TestAcmeDNSLego(t *testing.T) {
	e := startAcmeEnv(t, acmeOptions{})
	token := e.subscribe("legohome")
	api := fmt.Sprintf("https://127.0.0.1:%d", e.cloud.https)
	// lego's account file: one entry per domain it is asked for (the
	// wildcard's authorization names the same domain).
	e.legoObtains(t, "legohome.box.test", map[string]string{
		"username":   "legohome",
		"password":   token,
		"subdomain":  "legohome",
		"fulldomain": "_acme-challenge.legohome.box.test",
		"server_url": api,
	})
}

// With acmedns_register on, an account from the cloud's own /register
// (a new gateway with a random name), stored as acme-dns clients store
// it, gets that gateway's certificates through lego; allowfrom holds:
// an account allowed only from elsewhere is refused its /update.
func TestAcmeDNSRegisterLego(t *testing.T) {
	e := startAcmeEnv(t, acmeOptions{appExtra: "acmedns_register"})
	code, acct := e.cloud.api("/register", "-X", "POST", "-H", "Content-Type: application/json",
		"--data-raw", `{"allowfrom": ["127.0.0.1/32"]}`)
	if code != 201 {
		t.Fatalf("/register: %d %v", code, acct)
	}
	sub, _ := acct["subdomain"].(string)
	if acct["username"] != sub || acct["fulldomain"] != "_acme-challenge."+sub+".box.test" {
		t.Fatalf("/register answered %v", acct)
	}
	account := map[string]string{"server_url": fmt.Sprintf("https://127.0.0.1:%d", e.cloud.https)}
	for _, k := range []string{"username", "password", "subdomain", "fulldomain"} {
		account[k], _ = acct[k].(string)
	}
	e.legoObtains(t, sub+".box.test", account)

	code, far := e.cloud.api("/register", "-X", "POST", "--data-raw", `{"allowfrom": ["192.0.2.0/24"]}`)
	if code != 201 {
		t.Fatalf("/register from afar: %d %v", code, far)
	}
	farSub, _ := far["subdomain"].(string)
	farKey, _ := far["password"].(string)
	code, body := e.cloud.api("/update", "-X", "POST", "-H", "X-Api-User: "+farSub, "-H", "X-Api-Key: "+farKey,
		"--data-raw", `{"subdomain":"`+farSub+`","txt":"`+strings.Repeat("x", 43)+`"}`)
	if code != 401 || body["error"] != "forbidden" {
		t.Fatalf("update from outside allowfrom: %d %v", code, body)
	}
	code, body = e.cloud.api("/register", "-X", "POST", "--data-raw", `{"allowfrom": ["not-a-cidr"]}`)
	if code != 400 || body["error"] != "invalid_allowfrom_cidr" {
		t.Fatalf("/register with a bad allowfrom: %d %v", code, body)
	}
}

// legoObtains runs lego's acmedns provider with account (an entry of its
// account file) for fqdn and *.fqdn against Pebble, and checks the
// certificate and the two TXT values left behind.
func (e *acmeEnv) legoObtains(t *testing.T, fqdn string, account map[string]string) {
	t.Helper()
	lego := cloudtest.MustBuild(t, "./internal/testtools/legoacmedns")
	dir := t.TempDir()
	accounts := filepath.Join(dir, "acme-dns-accounts.json")
	b, _ := json.Marshal(map[string]any{fqdn: account})
	if err := os.WriteFile(accounts, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "cert.pem")
	cmd := exec.Command(lego, "-ca", e.pebble.directory, "-dns", fmt.Sprintf("127.0.0.1:%d", e.cloud.dns),
		"-out", out, "-d", fqdn, "-d", "*."+fqdn)
	cmd.Env = append(os.Environ(),
		"ACME_DNS_API_BASE="+account["server_url"],
		"ACME_DNS_STORAGE_PATH="+accounts,
		// Pebble's HTTPS and the cloud's API on 127.0.0.1 share the
		// test PKI's root.
		"SSL_CERT_FILE="+e.pki.rootPEM,
	)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("lego: %v\n%s", err, b)
	}
	pemBytes, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var chain [][]byte
	for rest := pemBytes; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		chain = append(chain, blk.Bytes)
	}
	leaf := verifyChain(t, chain, fqdn, e.pebble.rootFile)
	verifyChain(t, chain, "anyhost."+fqdn, e.pebble.rootFile)
	got := slices.Sorted(slices.Values(leaf.DNSNames))
	if !slices.Equal(got, []string{"*." + fqdn, fqdn}) {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
	// acme-dns clients never delete: the last two values stay, and no more.
	if txt := e.cloud.dig("+short", "_acme-challenge."+fqdn, "TXT"); len(txt) != 2 {
		t.Fatalf("challenge TXT after issuance: %v, want the two values", txt)
	}
}

// The acme-dns API through the real cloud: the status codes its clients
// see for a wrong key, another gateway's subdomain and a malformed value.
func TestAcmeDNSErrors(t *testing.T) {
	e := startAcmeEnv(t, acmeOptions{})
	token := e.subscribe("errhome")
	e.subscribe("otherhome")
	valid := strings.Repeat("x", 43)
	update := func(user, key, body string) (int, map[string]any) {
		return e.cloud.api("/update", "-X", "POST", "-H", "X-Api-User: "+user, "-H", "X-Api-Key: "+key,
			"-H", "Content-Type: application/json", "--data-raw", body)
	}
	for _, c := range []struct {
		what, user, key, body string
		status                int
		name                  string
	}{
		{"wrong key", "errhome", strings.Repeat("k", 43), `{"subdomain":"errhome","txt":"` + valid + `"}`, 401, "forbidden"},
		{"wrong subdomain", "errhome", token, `{"subdomain":"otherhome","txt":"` + valid + `"}`, 403, "forbidden"},
		{"malformed txt", "errhome", token, `{"subdomain":"errhome","txt":"short"}`, 400, "bad_txt"},
	} {
		if code, body := update(c.user, c.key, c.body); code != c.status || body["error"] != c.name {
			t.Errorf("%s: %d %v, want %d {\"error\":%q}", c.what, code, body, c.status, c.name)
		}
	}
	if code, body := update("errhome", token, `{"subdomain":"errhome","txt":"`+valid+`"}`); code != 200 || body["txt"] != valid {
		t.Fatalf("good update: %d %v", code, body)
	}
	if got := e.cloud.dig("+short", "_acme-challenge.errhome.box.test", "TXT"); !slices.Equal(got, []string{`"` + valid + `"`}) {
		t.Fatalf("TXT after the updates: %v", got)
	}
	if got := e.cloud.dig("+short", "_acme-challenge.otherhome.box.test", "TXT"); len(got) != 0 {
		t.Fatalf("another gateway's TXT: %v", got)
	}
	if code, _ := e.cloud.curl("api.box.test", "/health"); code != 200 {
		t.Fatalf("/health: %d", code)
	}
}
