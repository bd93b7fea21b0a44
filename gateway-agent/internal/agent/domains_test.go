package agent

import (
	"bytes"
	"context"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cnamedns"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/domaincheck"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// domainsCloud is the real registration API with custom domains, its
// CNAMEs checked through a DNS server the test fills.
type domainsCloud struct {
	url, ca string
	dns     *cnamedns.Server
	domains *registry.Domains
}

func startDomainsCloud(t *testing.T) *domainsCloud {
	t.Helper()
	c := &domainsCloud{dns: cnamedns.Start(t)}
	reg := registry.New(teststore.Open(t, "sqlite"), registry.Config{SweepInterval: time.Hour}, noMail{})
	reg.Start()
	t.Cleanup(reg.Stop)
	checker, err := domaincheck.New([]string{c.dns.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.domains = registry.NewDomains(reg, registry.DomainsConfig{Zone: "box.test", Check: checker.Check})
	if err := c.domains.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.domains.Stop)
	srv := httptest.NewTLSServer(regapi.New(reg, regapi.Config{Zone: "box.test", Domains: c.domains}))
	t.Cleanup(srv.Close)
	c.url, c.ca = srv.URL, filepath.Join(t.TempDir(), "cloud-ca.pem")
	if err := os.WriteFile(c.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *domainsCloud) delegate(domain, name string) {
	c.dns.Set(domain, name+".box.test")
	c.dns.Set("_acme-challenge."+domain, "_acme-challenge."+name+".box.test")
}

// domainAgent is a test agent (not Run) with custom domains, registered
// as name; its clock is moved by the test.
func domainAgent(t *testing.T, c *domainsCloud, name string, domains ...string) (*Agent, *time.Time) {
	t.Helper()
	a := testAgent(t, c.url, c.ca, 0)
	a.cfg.CustomDomains = domains
	set, err := a.cfg.Validate()
	if err != nil {
		t.Fatal(err)
	}
	a.set.CustomDomains = set.CustomDomains
	a.initDomains()
	a.st.Current = subscribe(t, a, name)
	now := time.Now()
	a.now = func() time.Time { return now }
	return a, &now
}

func domainState(t *testing.T, a *Agent, domain string) status.CustomDomain {
	t.Helper()
	for _, d := range a.Status().CustomDomains {
		if d.Domain == domain {
			return d
		}
	}
	t.Fatalf("%s not in the status: %+v", domain, a.Status().CustomDomains)
	return status.CustomDomain{}
}

func heldBy(t *testing.T, a *Agent) []string {
	t.Helper()
	list, err := a.api.Domains(context.Background(), a.st.Current.Token)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range list {
		out = append(out, d.Domain)
	}
	return out
}

// The agent claims its custom domain once the cloud sees the CNAMEs,
// asking again with backoff meanwhile; a claim the cloud drops (CNAME
// gone) goes back to waiting; another gateway's domain is refused; a
// claim no longer configured is released.
func TestCustomDomainClaims(t *testing.T) {
	c := startDomainsCloud(t)
	a, now := domainAgent(t, c, "myhome", "Home.Example.com")
	var logs lockedBuffer
	a.log = slog.New(slog.NewTextHandler(&logs, nil))
	ctx := context.Background()
	var r domainRun

	a.domainsStep(ctx, &r)
	d := domainState(t, a, "home.example.com")
	if d.State != status.DomainWaitingForCNAME || !strings.Contains(d.Reason, "home.example.com has no CNAME") || !d.NextAttempt.After(*now) {
		t.Fatalf("without CNAMEs: %+v", d)
	}
	// Asked again with the same answer: the reason is logged once, and
	// the next attempt waits twice as long.
	*now = now.Add(domainRetryFirst)
	a.domainsStep(ctx, &r)
	if again := domainState(t, a, "home.example.com"); again.NextAttempt.Sub(*now) != 2*domainRetryFirst {
		t.Fatalf("second delay %s, want %s", again.NextAttempt.Sub(*now), 2*domainRetryFirst)
	}
	if n := strings.Count(logs.String(), "custom domain not claimed"); n != 1 {
		t.Fatalf("the same reason logged %d times:\n%s", n, logs.String())
	}
	// The second record is missing now: a new reason, logged.
	c.dns.Set("home.example.com", "myhome.box.test")
	*now = now.Add(2 * domainRetryFirst)
	a.domainsStep(ctx, &r)
	if n := strings.Count(logs.String(), "custom domain not claimed"); n != 2 || !strings.Contains(logs.String(), "_acme-challenge.home.example.com has no CNAME") {
		t.Fatalf("a new reason not logged:\n%s", logs.String())
	}
	if p := strings.Join(a.Status().Problems, "\n"); !strings.Contains(p, "home.example.com is waiting for its CNAME records") {
		t.Fatalf("problems: %s", p)
	}

	// The records are in place, but the retry is not due yet: no claim.
	c.delegate("home.example.com", "myhome")
	a.domainsStep(ctx, &r)
	if d := domainState(t, a, "home.example.com"); d.State != status.DomainWaitingForCNAME {
		t.Fatalf("asked again before the retry was due: %+v", d)
	}
	*now = now.Add(4 * domainRetryFirst)
	a.domainsStep(ctx, &r)
	if d := domainState(t, a, "home.example.com"); d.State != status.DomainClaimed || d.Reason != "" || !strings.HasPrefix(d.URL, "https://home.example.com:") {
		t.Fatalf("delegated: %+v", d)
	}
	if held := heldBy(t, a); len(held) != 1 || held[0] != "home.example.com" {
		t.Fatalf("the cloud holds %v", held)
	}
	if via := a.certs.DelegationOf("home.example.com"); via != "myhome.box.test" {
		t.Fatalf("the certificate's challenges go to %q", via)
	}

	// Another gateway asking for it is refused whatever the records say.
	other, _ := domainAgent(t, c, "other", "home.example.com")
	other.domainsStep(ctx, &domainRun{})
	if d := domainState(t, other, "home.example.com"); d.State != status.DomainRefused || !strings.Contains(d.Reason, "another gateway") {
		t.Fatalf("other gateway: %+v", d)
	}

	// The CNAME goes, the cloud's recheck drops the claim, the agent's
	// next check sees it and waits for the records again.
	c.dns.Remove("home.example.com")
	if err := c.domains.Recheck(ctx); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(time.Duration(a.cfg.CustomDomainsCheck))
	a.domainsStep(ctx, &r)
	if d := domainState(t, a, "home.example.com"); d.State != status.DomainWaitingForCNAME {
		t.Fatalf("after the cloud dropped the claim: %+v", d)
	}
	if a.certs.Status("home.example.com").Obtaining || a.certs.DelegationOf("home.example.com") != "" {
		t.Fatal("the certificate of a dropped claim is still managed")
	}

	// A claim made under an earlier configuration is released at the
	// next check.
	c.delegate("old.example.com", "myhome")
	if _, err := a.api.ClaimDomain(ctx, a.st.Current.Token, "old.example.com"); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(time.Duration(a.cfg.CustomDomainsCheck))
	a.domainsStep(ctx, &r)
	if held := heldBy(t, a); len(held) != 0 {
		t.Fatalf("still held: %v", held)
	}
}

// After a restart the agent takes up the claims the cloud holds without
// claiming again, and a domain inside the registration's zone is refused
// without asking.
func TestCustomDomainAfterRestart(t *testing.T) {
	c := startDomainsCloud(t)
	c.delegate("home.example.com", "myhome")
	a, _ := domainAgent(t, c, "myhome", "home.example.com")
	ctx := context.Background()
	if _, err := a.api.ClaimDomain(ctx, a.st.Current.Token, "home.example.com"); err != nil {
		t.Fatal(err)
	}
	// The records go: a claim would now fail, but the claim held is
	// taken up as it is (the cloud's recheck decides when to drop it).
	c.dns.Remove("home.example.com")
	a.domainsStep(ctx, &domainRun{})
	if d := domainState(t, a, "home.example.com"); d.State != status.DomainClaimed {
		t.Fatalf("after a restart: %+v", d)
	}

	// A cloud URL without api.ZONE lets a name of the zone through the
	// configuration; the registration's zone catches it.
	b, _ := domainAgent(t, c, "second", "x.box.test")
	b.domainsStep(ctx, &domainRun{})
	if d := domainState(t, b, "x.box.test"); d.State != status.DomainRefused || !strings.Contains(d.Reason, "inside the zone") {
		t.Fatalf("a name of the zone: %+v", d)
	}
}

// After a rename the claim held under the old name is given up and the
// domain claimed anew under the new one, once its CNAMEs name it; the
// certificate's challenges move there.
func TestCustomDomainAfterRename(t *testing.T) {
	c := startDomainsCloud(t)
	c.delegate("home.example.com", "oldname")
	a, now := domainAgent(t, c, "oldname", "home.example.com")
	ctx := context.Background()
	var r domainRun
	a.domainsStep(ctx, &r)
	if d := domainState(t, a, "home.example.com"); d.State != status.DomainClaimed {
		t.Fatalf("before the rename: %+v", d)
	}
	oldToken := a.st.Current.Token

	a.st.Current = subscribe(t, a, "newname")
	// The check of the claims falls due too: the new name holds none,
	// which must not lose track of the old name's claim.
	*now = now.Add(time.Duration(a.cfg.CustomDomainsCheck))
	a.domainsStep(ctx, &r)
	if d := domainState(t, a, "home.example.com"); d.State != status.DomainWaitingForCNAME || !strings.Contains(d.Reason, "not to newname.box.test.") {
		t.Fatalf("renamed, CNAMEs still on the old name: %+v", d)
	}
	if list, err := a.api.Domains(ctx, oldToken); err != nil || len(list) != 0 {
		t.Fatalf("the old name still holds %+v (%v)", list, err)
	}
	c.delegate("home.example.com", "newname")
	*now = now.Add(domainRetryFirst)
	a.domainsStep(ctx, &r)
	if d := domainState(t, a, "home.example.com"); d.State != status.DomainClaimed {
		t.Fatalf("CNAMEs on the new name: %+v", d)
	}
	if via := a.certs.DelegationOf("home.example.com"); via != "newname.box.test" {
		t.Fatalf("the certificate's challenges go to %q", via)
	}
}

// lockedBuffer collects log lines from any goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// An agent restarted after a rename, before it moved its claim, finds the
// domain held by the name it renamed away from (still its own for the
// grace period) and moves the claim.
func TestCustomDomainClaimedUnderARetiredName(t *testing.T) {
	c := startDomainsCloud(t)
	c.delegate("home.example.com", "oldname")
	a, _ := domainAgent(t, c, "oldname", "home.example.com")
	ctx := context.Background()
	if _, err := a.api.ClaimDomain(ctx, a.st.Current.Token, "home.example.com"); err != nil {
		t.Fatal(err)
	}
	a.holdRetired(*a.st.Current)
	a.st.Current = subscribe(t, a, "newname")
	c.delegate("home.example.com", "newname")
	a.domainsStep(ctx, &domainRun{})
	if d := domainState(t, a, "home.example.com"); d.State != status.DomainClaimed {
		t.Fatalf("after the restart: %+v", d)
	}
	if held := heldBy(t, a); len(held) != 1 {
		t.Fatalf("the new name holds %v", held)
	}
}
