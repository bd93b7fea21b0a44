package e2e

import (
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cnamedns"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
)

// A custom domain through the real cloud: the claim is checked against a
// test DNS server (the cloud's domain_resolvers), then curl reaches the
// gateway under home.example.com through the tunnel and sees the
// gateway's own certificate for it; released, the name reaches the
// gateway no more.
func TestCustomDomainThroughTheTunnel(t *testing.T) {
	dns := cnamedns.Start(t)
	c := startTunnelCloudWith(t, "sqlite", "domain_resolvers "+dns.Addr)
	org := "Gatehouse test gateway alpha"
	gc := testcert.MustSelfSigned(t, testcert.Options{
		Serial:   big.NewInt(time.Now().UnixNano()),
		Subject:  pkix.Name{CommonName: "alpha.box.test", Organization: []string{org}},
		DNSNames: []string{"alpha.box.test", "home.example.com"},
	})
	file := filepath.Join(t.TempDir(), "alpha.pem")
	gc.MustWrite(t, file, "")
	cert := gatewayCert{cert: gc.TLS(), pool: gc.Pool(), file: file, org: org}
	srv := gatewayServer(t, cert, "hello from alpha")
	token := subscribe(t, c, "alpha")
	startAgent(t, c, "alpha", token, srv.Listener.Addr().String(), fastBackoff)

	claim := func() (int, map[string]any) {
		return c.api("/v1/domains", "-X", "POST", "-H", "Authorization: Bearer "+token,
			"-H", "Content-Type: application/json", "--data-raw", `{"domain":"home.example.com"}`)
	}
	if code, body := claim(); code != 422 || body["error"] != "DomainNotDelegated" {
		t.Fatalf("claim without CNAMEs: %d %v", code, body)
	}
	dns.Set("home.example.com", "alpha.box.test")
	dns.Set("_acme-challenge.home.example.com", "_acme-challenge.alpha.box.test")
	if code, body := claim(); code != 200 || body["domain"] != "home.example.com" || body["gateway"] != "alpha" {
		t.Fatalf("claim: %d %v", code, body)
	}
	r := curlTLS(t, c, "home.example.com", "/x", cert.file)
	if r.code != 200 || strings.TrimSpace(r.body) != "hello from alpha (path /x)" {
		t.Fatalf("home.example.com: %d %q", r.code, r.body)
	}
	if s := r.certLine("subject"); !strings.Contains(s, org) {
		t.Fatalf("home.example.com: certificate %q, want the gateway's own", s)
	}

	if code, body := c.api("/v1/domains/home.example.com", "-X", "DELETE", "-H", "Authorization: Bearer "+token); code != 200 {
		t.Fatalf("release: %d %v", code, body)
	}
	if r, err := tryCurlTLS(t, c, "home.example.com", "/x", cert.file); err == nil {
		t.Fatalf("a released domain still reaches the gateway: %d %q", r.code, r.body)
	}
}
