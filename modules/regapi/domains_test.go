package regapi_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cnamedns"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/ratelimit"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// delegate sets both CNAMEs of domain to gateway name.
func delegate(dns *cnamedns.Server, domain, name string) {
	dns.Set(domain, name+"."+zone)
	dns.Set("_acme-challenge."+domain, "_acme-challenge."+name+"."+zone)
}

func (e *env) claimDomain(token, domain string) reply {
	e.t.Helper()
	return e.do("POST", "/v1/domains", map[string]string{"domain": domain}, token)
}

func wantReason(t *testing.T, r reply, status int, name, reason string) {
	t.Helper()
	wantError(t, r, status, name)
	if !strings.Contains(r.str("reason"), reason) {
		t.Fatalf("reason %q does not say %q", r.str("reason"), reason)
	}
}

func TestDomainClaim(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		dns := cnamedns.Start(t)
		e := newEnv(t, driver, options{resolver: dns.Addr})
		token := e.subscribe("myhome")
		other := e.subscribe("other")

		wantReason(t, e.claimDomain(token, "home.example.com"), 422, "DomainNotDelegated", "home.example.com has no CNAME")
		dns.Set("home.example.com", "myhome."+zone)
		wantReason(t, e.claimDomain(token, "home.example.com"), 422, "DomainNotDelegated", "_acme-challenge.home.example.com has no CNAME")
		dns.Set("_acme-challenge.home.example.com", "_acme-challenge.other."+zone)
		wantReason(t, e.claimDomain(token, "home.example.com"), 422, "DomainNotDelegated", "not to _acme-challenge.myhome."+zone+".")
		if _, ok := e.domains.Gateway("home.example.com"); ok {
			t.Fatal("a refused claim is routed")
		}

		delegate(dns, "home.example.com", "myhome")
		before := time.Now().UTC().Truncate(time.Second)
		r := e.claimDomain(token, "Home.Example.COM.")
		if r.status != 200 || r.str("domain") != "home.example.com" || r.str("gateway") != "myhome" {
			t.Fatalf("claim: %d %s", r.status, r.body)
		}
		if at, err := time.Parse(time.RFC3339, r.str("checked_at")); err != nil || at.Before(before) {
			t.Fatalf("checked_at %q (%v)", r.str("checked_at"), err)
		}
		if name, ok := e.domains.Gateway("HOME.example.com."); !ok || name != "myhome" {
			t.Fatalf("index: %q, %v", name, ok)
		}
		// Claiming it again is harmless; another gateway cannot, even
		// with the CNAMEs turned to it.
		if r := e.claimDomain(token, "home.example.com"); r.status != 200 {
			t.Fatalf("claim again: %d %s", r.status, r.body)
		}
		delegate(dns, "home.example.com", "other")
		wantError(t, e.claimDomain(other, "home.example.com"), 409, "DomainTaken")

		wantError(t, e.claimDomain(token, zone), 400, "InvalidDomain")
		wantError(t, e.claimDomain(token, "www.other."+zone), 400, "InvalidDomain")
		wantError(t, e.claimDomain(token, "localhost"), 400, "InvalidDomain")
		wantError(t, e.claimDomain(token, "bad_name.example.com"), 400, "InvalidDomain")
		wantError(t, e.claimDomain(token, "xn--ab-.example.com"), 400, "InvalidDomain")
		wantError(t, e.do("POST", "/v1/domains", map[string]string{"domain": "home.example.com"}, ""), 401, "Unauthorized")

		// An internationalised name is held in its ASCII form.
		delegate(dns, "xn--bcher-kva.example.net", "myhome")
		if r := e.claimDomain(token, "Bücher.example.net"); r.status != 200 || r.str("domain") != "xn--bcher-kva.example.net" {
			t.Fatalf("IDN claim: %d %s", r.status, r.body)
		}

		list := e.do("GET", "/v1/domains", nil, token)
		domains, _ := list.json["domains"].([]any)
		if list.status != 200 || len(domains) != 2 || domains[0].(map[string]any)["domain"] != "home.example.com" {
			t.Fatalf("list: %d %s", list.status, list.body)
		}
		if r := e.do("GET", "/v1/domains", nil, other); r.status != 200 || string(r.body) != "{\"domains\":[]}\n" {
			t.Fatalf("another gateway's list: %d %s", r.status, r.body)
		}

		wantError(t, e.do("DELETE", "/v1/domains/home.example.com", nil, other), 404, "NoSuchDomain")
		if r := e.do("DELETE", "/v1/domains/home.example.com", nil, token); r.status != 200 || string(r.body) != "{}\n" {
			t.Fatalf("release: %d %s", r.status, r.body)
		}
		wantError(t, e.do("DELETE", "/v1/domains/home.example.com", nil, token), 404, "NoSuchDomain")
		if _, ok := e.domains.Gateway("home.example.com"); ok {
			t.Fatal("a released domain is still routed")
		}
		// Released, it is free for the gateway its CNAMEs now name.
		if r := e.claimDomain(other, "home.example.com"); r.status != 200 || r.str("gateway") != "other" {
			t.Fatalf("claim by other after release: %d %s", r.status, r.body)
		}
	})
}

// TestDomainRecheck: a claim whose CNAME was removed is dropped by the
// recheck (and logged through OnDrop); one whose resolvers fail is kept.
func TestDomainRecheck(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		dns := cnamedns.Start(t)
		var mu sync.Mutex
		var dropped []string
		e := newEnv(t, driver, options{resolver: dns.Addr, onDrop: func(c registry.DomainClaim, err error) {
			mu.Lock()
			defer mu.Unlock()
			dropped = append(dropped, c.Domain+": "+err.Error())
		}})
		token := e.subscribe("myhome")
		delegate(dns, "a.example.com", "myhome")
		delegate(dns, "b.example.com", "myhome")
		for _, d := range []string{"a.example.com", "b.example.com"} {
			if r := e.claimDomain(token, d); r.status != 200 {
				t.Fatalf("claim %s: %d %s", d, r.status, r.body)
			}
		}
		// Resolvers that cannot answer decide nothing.
		dns.Refuse(true)
		if err := e.domains.Recheck(t.Context()); err != nil {
			t.Fatal(err)
		}
		if claims, _ := e.store.DomainClaims(t.Context(), "myhome"); len(claims) != 2 {
			t.Fatalf("claims after a failed recheck: %v", claims)
		}
		dns.Refuse(false)
		dns.Remove("_acme-challenge.b.example.com")
		if err := e.domains.Recheck(t.Context()); err != nil {
			t.Fatal(err)
		}
		claims, err := e.store.DomainClaims(t.Context(), "myhome")
		if err != nil || len(claims) != 1 || claims[0].Domain != "a.example.com" {
			t.Fatalf("claims after the recheck: %v, %v", claims, err)
		}
		if _, ok := e.domains.Gateway("b.example.com"); ok {
			t.Fatal("a dropped claim is still routed")
		}
		if _, ok := e.domains.Gateway("a.example.com"); !ok {
			t.Fatal("a good claim is no longer routed")
		}
		mu.Lock()
		defer mu.Unlock()
		if len(dropped) != 1 || !strings.Contains(dropped[0], "_acme-challenge.b.example.com has no CNAME") {
			t.Fatalf("OnDrop told %v", dropped)
		}
	})
}

// TestDomainsGoWithTheGateway: an unsubscribed or expired gateway holds
// no domain any more, in the store or in the index.
func TestDomainsGoWithTheGateway(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		dns := cnamedns.Start(t)
		e := newEnv(t, driver, options{resolver: dns.Addr, expireAfter: 200 * time.Millisecond})
		gone := e.subscribe("gone")
		sleepy := e.subscribe("sleepy")
		delegate(dns, "gone.example.com", "gone")
		delegate(dns, "sleepy.example.com", "sleepy")
		for tok, d := range map[string]string{gone: "gone.example.com", sleepy: "sleepy.example.com"} {
			if r := e.claimDomain(tok, d); r.status != 200 {
				t.Fatalf("claim %s: %d %s", d, r.status, r.body)
			}
		}
		if r := e.get("/unsubscribe", "token", gone); r.status != 200 {
			t.Fatalf("unsubscribe: %d %s", r.status, r.body)
		}
		if _, ok := e.domains.Gateway("gone.example.com"); ok {
			t.Fatal("an unsubscribed gateway's domain is routed")
		}
		time.Sleep(300 * time.Millisecond)
		if err := e.reg.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.domains.Gateway("sleepy.example.com"); ok {
			t.Fatal("an expired gateway's domain is routed")
		}
		if claims, err := e.store.DomainClaims(t.Context(), ""); err != nil || len(claims) != 0 {
			t.Fatalf("claims left: %v, %v", claims, err)
		}
		// Its name is free again for a new registration of the domain.
		if r := e.get("/ping", "token", sleepy); r.status != 200 {
			t.Fatalf("ping: %d", r.status)
		}
		if r := e.claimDomain(sleepy, "sleepy.example.com"); r.status != 200 {
			t.Fatalf("claim after coming back: %d %s", r.status, r.body)
		}
	})
}

// TestDomainsOff: a server without custom domains answers 404.
func TestDomainsOff(t *testing.T) {
	e := newEnv(t, "sqlite", options{})
	token := e.subscribe("myhome")
	wantError(t, e.claimDomain(token, "home.example.com"), 404, "NotFound")
}

// TestDomainsOfADisabledGateway: the operator's switch stops routing the
// gateway's domains and keeps its claims; enabling routes them again.
func TestDomainsOfADisabledGateway(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		dns := cnamedns.Start(t)
		e := newEnv(t, driver, options{resolver: dns.Addr})
		token := e.subscribe("myhome")
		delegate(dns, "home.example.com", "myhome")
		if r := e.claimDomain(token, "home.example.com"); r.status != 200 {
			t.Fatalf("claim: %d %s", r.status, r.body)
		}
		if _, err := e.reg.SetDisabled(t.Context(), "myhome", true); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.domains.Gateway("home.example.com"); ok {
			t.Fatal("a disabled gateway's domain is routed")
		}
		if claims, err := e.store.DomainClaims(t.Context(), "myhome"); err != nil || len(claims) != 1 {
			t.Fatalf("claims of the disabled gateway: %v, %v", claims, err)
		}
		if _, err := e.reg.SetDisabled(t.Context(), "myhome", false); err != nil {
			t.Fatal(err)
		}
		if name, ok := e.domains.Gateway("home.example.com"); !ok || name != "myhome" {
			t.Fatal("an enabled gateway's domain is not routed again")
		}
	})
}

// TestDomainClaimRateLimited: a claim creates a routed name and sends the
// cloud's resolvers after the claimed domain, so it shares /subscribe's
// limit per client address; a refused claim counts too, so that a client
// cannot make the cloud query the public DNS without end.
func TestDomainClaimRateLimited(t *testing.T) {
	dns := cnamedns.Start(t)
	e := newEnv(t, "sqlite", options{resolver: dns.Addr, limits: ratelimit.New(time.Hour, 3, 0)})
	token := e.subscribe("myhome") // the first of the three
	delegate(dns, "home.example.com", "myhome")
	if r := e.claimDomain(token, "home.example.com"); r.status != 200 {
		t.Fatalf("claim: %d %s", r.status, r.body)
	}
	wantError(t, e.claimDomain(token, "nowhere.example.com"), 422, "DomainNotDelegated")
	r := e.claimDomain(token, "home.example.com")
	wantError(t, r, 429, "RateLimited")
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// Listing and releasing create nothing and stay open.
	if r := e.do("GET", "/v1/domains", nil, token); r.status != 200 {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	e.setClientIP("203.0.113.9")
	if r := e.claimDomain(token, "home.example.com"); r.status != 200 {
		t.Fatalf("claim from another address: %d %s", r.status, r.body)
	}
}

// TestDomainClaimsBounded: a gateway holds at most
// registry.MaxDomainsPerGateway custom domains; at the bound a new claim is
// refused before the DNS is asked, one it holds is still checked again, and
// a release makes room.
func TestDomainClaimsBounded(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		dns := cnamedns.Start(t)
		e := newEnv(t, driver, options{resolver: dns.Addr})
		token := e.subscribe("myhome")
		domain := func(i int) string { return "d" + strconv.Itoa(i) + ".example.com" }
		for i := range registry.MaxDomainsPerGateway + 1 {
			delegate(dns, domain(i), "myhome")
		}
		for i := range registry.MaxDomainsPerGateway {
			if r := e.claimDomain(token, domain(i)); r.status != 200 {
				t.Fatalf("claim %d: %d %s", i, r.status, r.body)
			}
		}
		last := domain(registry.MaxDomainsPerGateway)
		wantReason(t, e.claimDomain(token, last), 400, "TooManyDomains", "at most")
		if _, ok := e.domains.Gateway(last); ok {
			t.Fatal("a claim past the bound is routed")
		}
		if r := e.claimDomain(token, domain(0)); r.status != 200 {
			t.Fatalf("claiming a held domain again at the bound: %d %s", r.status, r.body)
		}
		if r := e.do("DELETE", "/v1/domains/"+domain(0), nil, token); r.status != 200 {
			t.Fatalf("release: %d %s", r.status, r.body)
		}
		if r := e.claimDomain(token, last); r.status != 200 {
			t.Fatalf("claim after a release: %d %s", r.status, r.body)
		}
	})
}
