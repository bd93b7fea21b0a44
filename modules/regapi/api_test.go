package regapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/domaincheck"
	"github.com/gatehouse-project/gatehouse/modules/ratelimit"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

const zone = "box.example.org"

// env is a registration API served over real HTTP on loopback, on a real store.
type env struct {
	t      *testing.T
	srv    *httptest.Server
	reg    *registry.Registry
	store  registry.Store
	mails  *mailbox
	client *http.Client
	// domains is nil unless options.resolver was set.
	domains *registry.Domains
	// clientIP, when valid, is what the API believes the caller's address is
	// (as a trusted proxy's header would say).
	mu       sync.Mutex
	clientIP netip.Addr
}

type options struct {
	expireAfter time.Duration
	limits      *ratelimit.Limiter
	// notifier replaces the in-memory mailbox (a real SMTP mailer, say).
	notifier registry.Notifier
	// nodes answers GET /v1/nodes.
	nodes regapi.NodeLister
	// acmeDNSRegister turns on POST /register.
	acmeDNSRegister bool
	// resolver, when set, turns on the custom domains, checked through
	// this DNS server.
	resolver string
	// onDrop is told of the claims a recheck dropped.
	onDrop func(registry.DomainClaim, error)
	// tunnel serves /v1/tunnel.
	tunnel http.Handler
}

func newEnv(t *testing.T, driver string, opt options) *env {
	t.Helper()
	e := &env{t: t, store: teststore.Open(t, driver), mails: newMailbox()}
	var notifier registry.Notifier = e.mails
	if opt.notifier != nil {
		notifier = opt.notifier
	}
	e.reg = registry.New(e.store, registry.Config{ExpireAfter: opt.expireAfter, SweepInterval: time.Hour}, notifier)
	e.reg.Start()
	t.Cleanup(e.reg.Stop)
	if opt.resolver != "" {
		checker, err := domaincheck.New([]string{opt.resolver}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		e.domains = registry.NewDomains(e.reg, registry.DomainsConfig{Zone: zone, Check: checker.Check, OnDrop: opt.onDrop})
		if err := e.domains.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.domains.Stop)
	}
	api := regapi.New(e.reg, regapi.Config{
		Zone: zone,
		ClientIP: func(r *http.Request) netip.Addr {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.clientIP.IsValid() {
				return e.clientIP
			}
			ap := netip.MustParseAddrPort(r.RemoteAddr)
			return ap.Addr()
		},
		SubscribeLimit:  opt.limits,
		ReclaimLimit:    opt.limits,
		EmailLimit:      opt.limits,
		Nodes:           opt.nodes,
		ACMEDNSRegister: opt.acmeDNSRegister,
		Domains:         e.domains,
		Tunnel:          opt.tunnel,
	})
	e.srv = httptest.NewServer(api)
	t.Cleanup(e.srv.Close)
	e.client = e.srv.Client()
	return e
}

func (e *env) setClientIP(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clientIP = netip.MustParseAddr(s)
}

type reply struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r reply) str(k string) string { s, _ := r.json[k].(string); return s }

func (e *env) do(method, path string, body any, token string) reply {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req)
}

func (e *env) send(req *http.Request) reply {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, body: b}
	_ = json.Unmarshal(b, &r.json)
	return r
}

func (e *env) get(path string, params ...string) reply {
	e.t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		q.Add(params[i], params[i+1])
	}
	return e.do("GET", path+"?"+q.Encode(), nil, "")
}

func (e *env) raw(path string) reply {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.send(req)
}

func (e *env) subscribe(name string, params ...string) string {
	e.t.Helper()
	r := e.get("/subscribe", append([]string{"name", name}, params...)...)
	if r.status != 200 || r.str("token") == "" || r.str("name") != name {
		e.t.Fatalf("subscribe %s: %d %s", name, r.status, r.body)
	}
	return r.str("token")
}

func wantError(t *testing.T, r reply, status int, name string) {
	t.Helper()
	if r.status != status || r.str("error") != name {
		t.Fatalf("got %d %s, want %d {\"error\":%q}", r.status, r.body, status, name)
	}
	if r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("error answered as %q, want JSON", r.header.Get("Content-Type"))
	}
	if r.str("reason") == "" {
		t.Fatalf("error %s carries no reason", r.body)
	}
}

// mailbox records what the registry asked to mail. The end-to-end tests of
// the Caddy module deliver the same mails through a real SMTP server.
type mailbox struct {
	ch chan mail
}

type mail struct{ kind, to, name, token string }

func newMailbox() *mailbox { return &mailbox{ch: make(chan mail, 16)} }

func (m *mailbox) SendVerification(_ context.Context, to, name, token string) error {
	m.ch <- mail{"verify", to, name, token}
	return nil
}

func (m *mailbox) SendReclamation(_ context.Context, to, name, token string) error {
	m.ch <- mail{"reclaim", to, name, token}
	return nil
}

func (m *mailbox) next(t *testing.T, kind string) mail {
	t.Helper()
	select {
	case ml := <-m.ch:
		if ml.kind != kind {
			t.Fatalf("got a %s mail, want %s", ml.kind, kind)
		}
		return ml
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s mail", kind)
	}
	return mail{}
}

func TestCompatSubscribe(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		r := e.get("/subscribe", "name", "myhome", "desc", "My home", "mode", "dynamic")
		if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("subscribe: %d %v %s", r.status, r.header, r.body)
		}
		if err := registry.CheckTokenSyntax(r.str("token")); err != nil {
			t.Fatalf("token %q: %v", r.str("token"), err)
		}
		wantError(t, e.get("/subscribe", "name", "myhome"), 400, "UnavailableName")
		wantError(t, e.get("/subscribe", "name", "api"), 400, "UnavailableName")
		wantError(t, e.get("/subscribe", "name", "ns12"), 400, "UnavailableName")
		wantError(t, e.get("/subscribe", "name", "Bad_Name"), 400, "InvalidName")
		wantError(t, e.get("/subscribe", "name", "-x"), 400, "InvalidName")
		wantError(t, e.get("/subscribe", "name", strings.Repeat("a", 64)), 400, "InvalidName")
		wantError(t, e.get("/subscribe"), 400, "InvalidName")
		wantError(t, e.get("/subscribe", "name", "other", "mode", "bridge"), 400, "BadRequest")
		wantError(t, e.get("/subscribe", "name", "other", "email", "not-an-email"), 400, "InvalidEmail")
		info := e.get("/info", "token", r.str("token"))
		if info.status != 200 || info.str("name") != "myhome" || info.str("mode") != "dynamic" || info.str("description") != "My home" || info.str("fqdn") != "myhome."+zone {
			t.Fatalf("info: %d %s", info.status, info.body)
		}
	})
}

// Attack on the original's defect: an empty reclamationToken matched every
// name that had never asked for a reclamation.
func TestAttackEmptyReclamationTokenTakeover(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		victim := e.subscribe("victim")
		r := e.raw("/subscribe?name=victim&reclamationToken=")
		wantError(t, r, 400, "UnavailableName")
		wantError(t, e.get("/subscribe", "name", "victim", "reclamationToken", "x"), 400, "ReclamationTokenMismatch")
		forged, _ := registry.NewToken()
		wantError(t, e.get("/subscribe", "name", "victim", "reclamationToken", forged), 400, "ReclamationTokenMismatch")
		if r := e.get("/ping", "token", victim); r.status != 200 {
			t.Fatalf("victim's token stopped working: %d %s", r.status, r.body)
		}
	})
}

// Attack on the original's defect: /info returned the reclamation and
// verification tokens.
func TestAttackInfoLeaksNoSecret(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		token := e.subscribe("leaky", "email", "owner@example.com")
		// As the WebThings gateway does: /subscribe stores the email,
		// /setemail sends the verification mail.
		if r := e.get("/setemail", "token", token, "email", "owner@example.com"); r.status != 200 {
			t.Fatalf("setemail: %d %s", r.status, r.body)
		}
		verify := e.mails.next(t, "verify")
		if r := e.get("/verifyemail", "s", verify.token); r.status != 200 {
			t.Fatalf("verify: %d %s", r.status, r.body)
		}
		if r := e.get("/reclaim", "name", "leaky"); r.status != 200 {
			t.Fatalf("reclaim: %d %s", r.status, r.body)
		}
		reclaim := e.mails.next(t, "reclaim")
		if r := e.get("/setemail", "token", token, "email", "new@example.com"); r.status != 200 {
			t.Fatalf("setemail: %d %s", r.status, r.body)
		}
		pending := e.mails.next(t, "verify")
		g, err := e.store.Gateway(context.Background(), "leaky")
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/info?token=" + token} {
			body := string(e.raw(path).body)
			for what, secret := range map[string]string{
				"token": token, "reclamation token": reclaim.token, "verification token": pending.token,
				"token hash": fmt.Sprintf("%x", g.TokenHash), "token hash (json)": jsonBytes(g.TokenHash),
			} {
				if strings.Contains(body, secret) {
					t.Fatalf("%s shows the %s: %s", path, what, body)
				}
			}
			for _, key := range []string{"token", "reclamationToken", "reclaim", "verify", "hash"} {
				if strings.Contains(strings.ToLower(body), strings.ToLower(`"`+key)) {
					t.Fatalf("%s has a %q field: %s", path, key, body)
				}
			}
		}
		v1 := e.do("GET", "/v1/info", nil, token)
		if strings.Contains(string(v1.body), reclaim.token) || strings.Contains(string(v1.body), token) {
			t.Fatalf("/v1/info leaks a secret: %s", v1.body)
		}
	})
}

func jsonBytes(b []byte) string { s, _ := json.Marshal(b); return strings.Trim(string(s), `"`) }

// Attack on the original's defect: last_ip held IPv4 only, so a gateway on
// IPv6 was invisible to discovery and dynamic DNS.
func TestAttackIPv6ClientRecorded(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		token := e.subscribe("six")
		e.setClientIP("2001:db8::42")
		if r := e.get("/ping", "token", token, "local_ip", "192.168.1.10,fd00::10"); r.status != 200 {
			t.Fatalf("ping: %d %s", r.status, r.body)
		}
		e.setClientIP("198.51.100.7")
		if r := e.get("/ping", "token", token); r.status != 200 {
			t.Fatalf("ping: %d %s", r.status, r.body)
		}
		info := e.get("/info", "token", token)
		if info.str("public_ipv6") != "2001:db8::42" || info.str("public_ipv4") != "198.51.100.7" {
			t.Fatalf("both families not kept: %s", info.body)
		}
		if fmt.Sprint(info.json["local_addrs"]) != "[192.168.1.10 fd00::10]" {
			t.Fatalf("local addresses: %s", info.body)
		}
		e.setClientIP("2001:db8::42")
		d := e.do("GET", "/v1/discover", nil, "")
		if !strings.Contains(string(d.body), `"six"`) {
			t.Fatalf("discovery over IPv6 does not find the gateway: %s", d.body)
		}
	})
}

// Attack on the original's defect: nothing ever expired, so a dead
// gateway's name kept resolving forever.
func TestAttackSilentGatewayExpires(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{expireAfter: 200 * time.Millisecond})
		var events []registry.Event
		var mu sync.Mutex
		e.reg.Observe(func(ev registry.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() })
		token := e.subscribe("sleepy")
		e.get("/ping", "token", token, "local_ip", "10.0.0.2")
		time.Sleep(300 * time.Millisecond)
		if err := e.reg.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		info := e.get("/info", "token", token)
		if info.json["expired"] != true || info.str("public_ipv4") != "" || len(info.json["local_addrs"].([]any)) != 0 {
			t.Fatalf("silent gateway kept its addresses: %s", info.body)
		}
		mu.Lock()
		last := events[len(events)-1]
		mu.Unlock()
		if last.Name() != "sleepy" || !last.Revoked || !last.Gateway.Expired {
			t.Fatalf("expiry not announced to observers: %+v", last)
		}
		if r := e.get("/ping", "token", token); r.status != 200 {
			t.Fatalf("ping after expiry: %d %s", r.status, r.body)
		}
		info = e.get("/info", "token", token)
		if info.json["expired"] != false || info.str("public_ipv4") != "127.0.0.1" {
			t.Fatalf("ping did not restore the gateway: %s", info.body)
		}
		wantError(t, e.get("/subscribe", "name", "sleepy"), 400, "UnavailableName")
	})
}

// Attack on the original's defect: no rate limiting, so one client could
// register names or send mail without end.
func TestAttackRateLimited(t *testing.T) {
	e := newEnv(t, "sqlite", options{limits: ratelimit.New(time.Hour, 2, 100)})
	e.subscribe("one")
	e.subscribe("two")
	r := e.get("/subscribe", "name", "three")
	wantError(t, r, 429, "RateLimited")
	if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("429 without a useful Retry-After: %q", ra)
	}
	wantError(t, e.do("POST", "/v1/subscribe", map[string]string{"name": "four"}, ""), 429, "RateLimited")
	e.setClientIP("203.0.113.9")
	e.subscribe("five")
}

// Attack on the original's defect: tokens stored in plain.
func TestAttackTokensStoredHashed(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		token := e.subscribe("hashed")
		g, err := e.store.Gateway(context.Background(), "hashed")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g.TokenHash, registry.HashToken(token)) {
			t.Fatalf("stored %x, want the SHA-256 of the token", g.TokenHash)
		}
		if bytes.Contains(g.TokenHash, []byte(token)) {
			t.Fatal("token stored in plain")
		}
	})
}

func TestCompatErrorPaths(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		token := e.subscribe("errs")
		unknown, _ := registry.NewToken()
		for _, path := range []string{"/ping", "/info", "/dnsconfig", "/revokeemail", "/setemail", "/unsubscribe"} {
			wantError(t, e.raw(path), 400, "BadRequest")
			params := []string{"token", unknown, "challenge", "abc", "email", "a@example.com"}
			wantError(t, e.get(path, params...), 404, "NotFound")
			wantError(t, e.get(path, "token", "short", "challenge", "abc", "email", "a@example.com"), 404, "NotFound")
			wantError(t, e.raw(path+"?token=%zz"), 400, "BadRequest")
			wantError(t, e.raw(path+"?token=%ff%fe"), 400, "BadRequest")
			wantError(t, e.raw(path+"?token="+strings.Repeat("a", 600)), 400, "BadRequest")
			wantError(t, e.raw(path+"?token="+token+"&token="+unknown), 400, "BadRequest")
		}
		wantError(t, e.get("/ping", "token", token, "local_ip", "not-an-ip"), 400, "BadRequest")
		wantError(t, e.get("/ping", "token", token, "local_ip", "1,2,3,4,5,6,7,8,9"), 400, "BadRequest")
		wantError(t, e.get("/dnsconfig", "token", token, "challenge", ""), 400, "BadRequest")
		wantError(t, e.get("/dnsconfig", "token", token, "challenge", "a b"), 400, "BadRequest")
		wantError(t, e.get("/setemail", "token", token, "email", "a@example.com", "optout", "maybe"), 400, "BadRequest")
		wantError(t, e.get("/reclaim", "name", "nobody"), 400, "NoSuchName")
		wantError(t, e.get("/reclaim", "name", "errs"), 400, "NoEmail")
		r := e.get("/verifyemail", "s", unknown)
		if r.status != 400 || !strings.Contains(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), "not valid") {
			t.Fatalf("bad verification link: %d %s", r.status, r.body)
		}
		if r := e.raw("/connectivity-check"); r.status != 200 || string(r.body) != "OK" {
			t.Fatalf("connectivity-check: %d %q", r.status, r.body)
		}
		wantError(t, e.raw("/nope"), 404, "NotFound")
		// Nothing above changed the gateway.
		info := e.get("/info", "token", token)
		if info.str("email") != "" || info.str("last_ping") != "" {
			t.Fatalf("refused requests changed the gateway: %s", info.body)
		}
		recs, _ := e.store.Records(context.Background(), registry.GatewaySubtree("errs"))
		if len(recs) != 0 {
			t.Fatalf("refused requests wrote records: %v", recs)
		}
	})
}

func TestCompatDNSConfigAndUnsubscribe(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		token := e.subscribe("acme")
		for _, v := range []string{"first-value", "second-value"} {
			if r := e.get("/dnsconfig", "token", token, "challenge", v); r.status != 200 {
				t.Fatalf("dnsconfig: %d %s", r.status, r.body)
			}
		}
		recs, err := e.store.Records(context.Background(), registry.GatewaySubtree("acme"))
		if err != nil || len(recs) != 2 || recs[0].Owner != "_acme-challenge" || recs[1].Value != "second-value" {
			t.Fatalf("challenge records: %v %v", recs, err)
		}
		if r := e.get("/unsubscribe", "token", token); r.status != 200 {
			t.Fatalf("unsubscribe: %d %s", r.status, r.body)
		}
		wantError(t, e.get("/info", "token", token), 404, "NotFound")
		wantError(t, e.get("/unsubscribe", "token", token), 404, "NotFound")
		e.subscribe("acme") // the name is free again
	})
}

func TestEmailVerifyReclaimFlow(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		old := e.subscribe("family")
		if r := e.get("/setemail", "token", old, "email", "me@example.com", "optout", "true"); r.status != 200 {
			t.Fatalf("setemail: %d %s", r.status, r.body)
		}
		v := e.mails.next(t, "verify")
		if v.to != "me@example.com" || v.name != "family" {
			t.Fatalf("verification mail: %+v", v)
		}
		wantError(t, e.get("/reclaim", "name", "family"), 400, "NoEmail")
		if r := e.get("/verifyemail", "s", v.token); r.status != 200 || !strings.Contains(string(r.body), "verified") {
			t.Fatalf("verify: %d %s", r.status, r.body)
		}
		if r := e.get("/verifyemail", "s", v.token); r.status != 400 {
			t.Fatalf("a verification link worked twice: %d", r.status)
		}
		info := e.get("/info", "token", old)
		if info.json["email_verified"] != true || info.json["optout"] != true || info.str("email") != "me@example.com" {
			t.Fatalf("info after verify: %s", info.body)
		}
		wantError(t, e.get("/subscribe", "name", "family"), 400, "UnavailableNameReclamationPossible")
		if r := e.get("/reclaim", "name", "family"); r.status != 200 {
			t.Fatalf("reclaim: %d %s", r.status, r.body)
		}
		rc := e.mails.next(t, "reclaim")
		r := e.get("/subscribe", "name", "family", "reclamationToken", rc.token)
		if r.status != 200 || r.str("token") == "" || r.str("token") == old {
			t.Fatalf("subscribe with reclamation token: %d %s", r.status, r.body)
		}
		wantError(t, e.get("/ping", "token", old), 404, "NotFound")
		if p := e.get("/ping", "token", r.str("token")); p.status != 200 {
			t.Fatalf("new token refused: %d %s", p.status, p.body)
		}
		wantError(t, e.get("/subscribe", "name", "family", "reclamationToken", rc.token), 400, "ReclamationTokenMismatch")
		// Revoking the email ends the owner's power to reclaim.
		if r := e.get("/revokeemail", "token", r.str("token")); r.status != 200 {
			t.Fatalf("revokeemail: %d %s", r.status, r.body)
		}
		wantError(t, e.get("/reclaim", "name", "family"), 400, "NoEmail")
	})
}

func TestUnsubscribeWithReclamationToken(t *testing.T) {
	e := newEnv(t, "sqlite", options{})
	token := e.subscribe("gone", "email", "x@example.com")
	e.get("/setemail", "token", token, "email", "x@example.com")
	e.get("/verifyemail", "s", e.mails.next(t, "verify").token)
	e.get("/reclaim", "name", "gone")
	rc := e.mails.next(t, "reclaim")
	if r := e.get("/unsubscribe", "reclamationToken", rc.token); r.status != 200 {
		t.Fatalf("unsubscribe by reclamation token: %d %s", r.status, r.body)
	}
	wantError(t, e.get("/info", "token", token), 404, "NotFound")
}

func TestConcurrentSubscribeOneWinner(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		const n = 20
		var wg sync.WaitGroup
		codes := make(chan int, n)
		for range n {
			wg.Go(func() {
				resp, err := e.client.Get(e.srv.URL + "/subscribe?name=contested")
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				codes <- resp.StatusCode
			})
		}
		wg.Wait()
		close(codes)
		wins := 0
		for c := range codes {
			switch c {
			case 200:
				wins++
			case 400:
			default:
				t.Fatalf("unexpected status %d", c)
			}
		}
		if wins != 1 {
			t.Fatalf("%d subscribes of one name won, want exactly 1", wins)
		}
	})
}

func TestV1Flow(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		r := e.do("POST", "/v1/subscribe", map[string]string{"mac": "00:1A:2b:3c:4d:5e", "description": "router"}, "")
		if r.status != 201 || r.str("name") != "gw-001a2b3c4d5e" || r.str("fqdn") != "gw-001a2b3c4d5e."+zone || r.str("zone") != zone {
			t.Fatalf("subscribe by mac: %d %s", r.status, r.body)
		}
		token := r.str("token")
		wantError(t, e.do("POST", "/v1/subscribe", map[string]string{"mac": "00:1a:2b:3c:4d:5e"}, ""), 400, "UnavailableName")
		wantError(t, e.do("POST", "/v1/subscribe", map[string]string{"mac": "zz"}, ""), 400, "InvalidName")
		wantError(t, e.do("POST", "/v1/subscribe", map[string]string{"mac": "00:1a:2b:3c:4d:5f", "name": "x"}, ""), 400, "BadRequest")

		p := e.do("POST", "/v1/ping", map[string]any{"local_addrs": []string{"192.168.1.2", "fd00::2"}}, token)
		if p.status != 200 || fmt.Sprint(p.json["local_addrs"]) != "[192.168.1.2 fd00::2]" || p.str("public_ipv4") != "127.0.0.1" {
			t.Fatalf("v1 ping: %d %s", p.status, p.body)
		}
		wantError(t, e.do("POST", "/v1/ping", map[string]any{"local_addrs": []string{"nope"}}, token), 400, "BadRequest")
		wantError(t, e.do("POST", "/v1/ping", nil, ""), 401, "Unauthorized")
		unknown, _ := registry.NewToken()
		wantError(t, e.do("GET", "/v1/info", nil, unknown), 401, "Unauthorized")
		if i := e.do("GET", "/v1/info", nil, token); i.status != 200 || i.str("description") != "router" {
			t.Fatalf("v1 info: %d %s", i.status, i.body)
		}
		d := e.do("GET", "/v1/discover", nil, "")
		gws, _ := d.json["gateways"].([]any)
		if d.status != 200 || len(gws) != 1 || d.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("discover: %d %s", d.status, d.body)
		}
		e.setClientIP("192.0.2.99")
		if d := e.do("GET", "/v1/discover", nil, ""); !strings.Contains(string(d.body), `"gateways":[]`) {
			t.Fatalf("discovery shows gateways of another address: %s", d.body)
		}
		pre, _ := http.NewRequest("OPTIONS", e.srv.URL+"/v1/discover", nil)
		if pr := e.send(pre); pr.status != 204 || !strings.Contains(pr.header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("preflight: %d %v", pr.status, pr.header)
		}
		if r := e.do("POST", "/v1/email", map[string]any{"email": "v1@example.com"}, token); r.status != 200 {
			t.Fatalf("v1 email: %d %s", r.status, r.body)
		}
		e.get("/verifyemail", "s", e.mails.next(t, "verify").token)
		if r := e.do("POST", "/v1/reclaim", map[string]any{"name": "gw-001a2b3c4d5e"}, ""); r.status != 200 {
			t.Fatalf("v1 reclaim: %d %s", r.status, r.body)
		}
		rc := e.mails.next(t, "reclaim")
		r = e.do("POST", "/v1/subscribe", map[string]string{"name": "gw-001a2b3c4d5e", "reclamation_token": rc.token}, "")
		if r.status != 200 || r.str("token") == token {
			t.Fatalf("v1 reclaim subscribe: %d %s", r.status, r.body)
		}
		wantError(t, e.do("POST", "/v1/reclaim", map[string]any{"name": "unknown"}, ""), 404, "NoSuchName")
		if r := e.do("DELETE", "/v1/gateway", nil, r.str("token")); r.status != 200 {
			t.Fatalf("v1 unsubscribe: %d %s", r.status, r.body)
		}
	})
}

func TestV1BadBodies(t *testing.T) {
	e := newEnv(t, "sqlite", options{})
	post := func(body string) reply {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/subscribe", strings.NewReader(body))
		return e.send(req)
	}
	wantError(t, post(`{"name":`), 400, "BadRequest")
	wantError(t, post(`{"name":"a"} {"name":"b"}`), 400, "BadRequest")
	wantError(t, post("{\"name\":\"\xff\"}"), 400, "BadRequest")
	wantError(t, post(`["name"]`), 400, "BadRequest")
	wantError(t, post(`{"name":"big","description":"`+strings.Repeat("x", 70<<10)+`"}`), 413, "BodyTooLarge")
	wantError(t, post(`{"name":"ctl","description":"a\u0007b"}`), 400, "BadRequest")
	if n, _ := e.store.CountGateways(context.Background()); n != 0 {
		t.Fatalf("bad bodies registered %d gateways", n)
	}
}

func TestV1Records(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		token := e.subscribe("rec")
		other := e.subscribe("other")
		z := zone + "."
		put := func(method string, recs ...map[string]any) reply {
			return e.do(method, "/v1/records", map[string]any{"zone": z, "records": recs}, token)
		}
		txt := func(name, data string) map[string]any {
			return map[string]any{"name": name, "type": "TXT", "data": data, "ttl": 60}
		}
		if r := put("POST", txt("_acme-challenge.rec", "one"), txt("_acme-challenge.rec", "two")); r.status != 200 {
			t.Fatalf("append: %d %s", r.status, r.body)
		}
		if r := put("POST", map[string]any{"name": "www.rec", "type": "CNAME", "data": "rec." + z}); r.status != 200 {
			t.Fatalf("append CNAME: %d %s", r.status, r.body)
		}
		if r := put("PUT", map[string]any{"name": "svc.rec", "type": "A", "data": "198.51.100.1"}); r.status != 200 {
			t.Fatalf("set A below the name: %d %s", r.status, r.body)
		}
		wantError(t, put("PUT", map[string]any{"name": "rec", "type": "A", "data": "198.51.100.1"}), 400, "BadRequest")
		wantError(t, put("POST", txt("other", "x")), 403, "OutsideSubtree")
		wantError(t, put("POST", txt("@", "x")), 403, "OutsideSubtree")
		wantError(t, put("POST", txt("evilrec", "x")), 403, "OutsideSubtree")
		wantError(t, put("POST", map[string]any{"name": "rec", "type": "CNAME", "data": "x.example."}), 400, "BadRequest")
		wantError(t, put("POST", map[string]any{"name": "a.rec", "type": "A", "data": "::1"}), 400, "BadRequest")
		wantError(t, put("POST", map[string]any{"name": "a.rec", "type": "MX", "data": "10 mx."}), 400, "UnsupportedType")
		wantError(t, put("POST", txt("_acme-challenge.rec", strings.Repeat("v", 2000))), 400, "BadRequest")
		wantError(t, e.do("POST", "/v1/records", map[string]any{"zone": "other." + z, "records": []any{txt("@", "x")}}, token), 403, "OutsideSubtree")
		wantError(t, e.do("POST", "/v1/records", map[string]any{"zone": z, "records": []any{txt("_acme-challenge.rec", "x")}}, other), 403, "OutsideSubtree")

		g := e.do("GET", "/v1/records?zone="+z, nil, token)
		if g.status != 200 || len(g.json["records"].([]any)) != 4 {
			t.Fatalf("get: %d %s", g.status, g.body)
		}
		// Set replaces the TXT RRset atomically.
		if r := put("PUT", txt("_acme-challenge.rec", "three")); r.status != 200 {
			t.Fatalf("set: %d %s", r.status, r.body)
		}
		// A narrower zone sees names relative to itself.
		g = e.do("GET", "/v1/records?zone=rec."+z, nil, token)
		body := string(g.body)
		if !strings.Contains(body, `"name":"_acme-challenge","type":"TXT","data":"three"`) || strings.Contains(body, `"one"`) || !strings.Contains(body, `"name":"svc","type":"A"`) {
			t.Fatalf("get after set: %s", body)
		}
		d := put("DELETE", map[string]any{"name": "_acme-challenge.rec", "type": "TXT"})
		if d.status != 200 || len(d.json["records"].([]any)) != 1 {
			t.Fatalf("delete with empty data: %d %s", d.status, d.body)
		}
		g = e.do("GET", "/v1/records", nil, token)
		if len(g.json["records"].([]any)) != 2 {
			t.Fatalf("after delete: %s", g.body)
		}
		// The other gateway's records are untouched by anything above.
		o := e.do("GET", "/v1/records", nil, other)
		if len(o.json["records"].([]any)) != 0 {
			t.Fatalf("other gateway has records: %s", o.body)
		}
	})
}
