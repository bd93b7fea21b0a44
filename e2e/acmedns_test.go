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
// values live at _acme-challenge.NAME.ZONE together.
func TestAcmeDNSLego(t *testing.T) {
	e := startAcmeEnv(t, acmeOptions{})
	token := e.subscribe("legohome")
	lego := cloudtest.MustBuild(t, "./internal/testtools/legoacmedns")

	dir := t.TempDir()
	accounts := filepath.Join(dir, "acme-dns-accounts.json")
	api := fmt.Sprintf("https://127.0.0.1:%d", e.cloud.https)
	// lego's account file: one entry per domain it is asked for (the
	// wildcard's authorization names the same domain).
	account := map[string]any{"legohome.box.test": map[string]string{
		"username":   "legohome",
		"password":   token,
		"subdomain":  "legohome",
		"fulldomain": "_acme-challenge.legohome.box.test",
		"server_url": api,
	}}
	b, _ := json.Marshal(account)
	if err := os.WriteFile(accounts, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "cert.pem")
	cmd := exec.Command(lego, "-ca", e.pebble.directory, "-dns", fmt.Sprintf("127.0.0.1:%d", e.cloud.dns),
		"-out", out, "-d", "legohome.box.test", "-d", "*.legohome.box.test")
	cmd.Env = append(os.Environ(),
		"ACME_DNS_API_BASE="+api,
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
	leaf := verifyChain(t, chain, "legohome.box.test", e.pebble.rootFile)
	verifyChain(t, chain, "anyhost.legohome.box.test", e.pebble.rootFile)
	got := slices.Sorted(slices.Values(leaf.DNSNames))
	if !slices.Equal(got, []string{"*.legohome.box.test", "legohome.box.test"}) {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
	// acme-dns clients never delete: the last two values stay, and no more.
	if txt := e.cloud.dig("+short", "_acme-challenge.legohome.box.test", "TXT"); len(txt) != 2 {
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
