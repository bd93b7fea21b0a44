package regapi_test

import (
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/ratelimit"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

func (e *env) acmeDNSRegister(body string) reply {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+"/register", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	return e.send(req)
}

func (r reply) strings(k string) []string {
	list, ok := r.json[k].([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(list))
	for _, v := range list {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}

var wholeUUIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestACMEDNSRegisterOff: without the operator's switch, /register does
// not exist, and creates nothing.
func TestACMEDNSRegisterOff(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		wantError(t, e.acmeDNSRegister(""), 404, "NotFound")
		if n, err := e.store.CountGateways(t.Context()); err != nil || n != 0 {
			t.Fatalf("gateways after a refused /register: %d, %v", n, err)
		}
	})
}

// TestACMEDNSRegister: an account as acme-dns answers it (201, a UUID
// subdomain, the token as password, fulldomain where /update writes),
// which /update then accepts.
func TestACMEDNSRegister(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{acmeDNSRegister: true})
		r := e.acmeDNSRegister("")
		if r.status != 201 || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("/register: %d %s", r.status, r.body)
		}
		sub := r.str("subdomain")
		if !wholeUUIDRE.MatchString(sub) || r.str("username") != sub || r.str("password") == "" ||
			r.str("fulldomain") != "_acme-challenge."+sub+"."+zone {
			t.Fatalf("/register answered %s", r.body)
		}
		if list, ok := r.json["allowfrom"].([]any); !ok || len(list) != 0 {
			t.Fatalf("allowfrom = %v, want [] as acme-dns answers", r.json["allowfrom"])
		}
		if r := e.acmeDNSUpdate(sub, r.str("password"), updateBody(sub, txtValue(0))); r.status != 200 {
			t.Fatalf("update with the registered account: %d %s", r.status, r.body)
		}
		if got := e.challengeValues(sub); !slices.Equal(got, []string{txtValue(0)}) {
			t.Fatalf("challenge values %v", got)
		}
		// A second account is another gateway.
		if r2 := e.acmeDNSRegister("{}"); r2.status != 201 || r2.str("subdomain") == sub {
			t.Fatalf("second /register: %d %s", r2.status, r2.body)
		}
	})
}

// TestACMEDNSAllowFrom: allowfrom is validated as acme-dns validates it,
// stored with the gateway, and /update refuses (401) a client outside it.
func TestACMEDNSAllowFrom(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{acmeDNSRegister: true})
		wantError(t, e.acmeDNSRegister(`{"allowfrom": [`), 400, "malformed_json_payload")
		wantError(t, e.acmeDNSRegister(`{"allowfrom": ["192.0.2.0/24", "not a network"]}`), 400, "invalid_allowfrom_cidr")
		wantError(t, e.acmeDNSRegister(`{"allowfrom": ["192.0.2.1"]}`), 400, "invalid_allowfrom_cidr")
		if n, err := e.store.CountGateways(t.Context()); err != nil || n != 0 {
			t.Fatalf("gateways after refused registrations: %d, %v", n, err)
		}
		r := e.acmeDNSRegister(`{"allowfrom": ["192.0.2.7/24", "[2001:db8::]/32"]}`)
		if r.status != 201 {
			t.Fatalf("/register: %d %s", r.status, r.body)
		}
		if got := r.strings("allowfrom"); !slices.Equal(got, []string{"192.0.2.7/24", "2001:db8::/32"}) {
			t.Fatalf("allowfrom answered %v", got)
		}
		sub, key := r.str("subdomain"), r.str("password")
		g, err := e.store.Gateway(t.Context(), sub)
		if err != nil || len(g.AllowFrom) != 2 {
			t.Fatalf("stored gateway %+v, %v", g, err)
		}
		for i, c := range []struct {
			ip     string
			status int
		}{
			{"198.51.100.1", 401}, {"192.0.3.1", 401}, {"2001:db9::1", 401},
			{"192.0.2.200", 200}, {"2001:db8:ffff::1", 200}, {"::ffff:192.0.2.9", 200},
		} {
			e.setClientIP(c.ip)
			got := e.acmeDNSUpdate(sub, key, updateBody(sub, txtValue(i)))
			if got.status != c.status {
				t.Errorf("update from %s: %d %s, want %d", c.ip, got.status, got.body, c.status)
			}
			if c.status == 401 && got.str("error") != "forbidden" {
				t.Errorf("update from %s: %s, want acme-dns's forbidden", c.ip, got.body)
			}
		}
	})
}

// TestAllowFromOnEveryTokenEndpoint: an acme-dns account's key is its
// gateway's token, so allowfrom holds wherever the token is taken, or a
// leaked key would set the challenge TXT through /dnsconfig or /v1/records
// (and so obtain certificates for every domain whose _acme-challenge is
// CNAMEd to the account) from anywhere.
func TestAllowFromOnEveryTokenEndpoint(t *testing.T) {
	e := newEnv(t, "sqlite", options{acmeDNSRegister: true})
	r := e.acmeDNSRegister(`{"allowfrom": ["192.0.2.0/24"]}`)
	if r.status != 201 {
		t.Fatalf("/register: %d %s", r.status, r.body)
	}
	sub, key := r.str("subdomain"), r.str("password")
	e.setClientIP("198.51.100.1")
	for what, got := range map[string]reply{
		"/dnsconfig":   e.get("/dnsconfig", "token", key, "challenge", txtValue(0)),
		"/info":        e.get("/info", "token", key),
		"/ping":        e.get("/ping", "token", key),
		"/setemail":    e.get("/setemail", "token", key, "email", "x@example.com"),
		"/unsubscribe": e.get("/unsubscribe", "token", key),
		"GET /v1/info": e.do("GET", "/v1/info", nil, key),
		"POST /v1/records": e.do("POST", "/v1/records", map[string]any{"zone": sub + "." + zone + ".",
			"records": []map[string]any{{"name": "_acme-challenge", "type": "TXT", "data": txtValue(1)}}}, key),
	} {
		if got.status != 401 || got.str("error") != "Unauthorized" || !strings.Contains(got.str("reason"), "198.51.100.1") {
			t.Errorf("%s from outside allowfrom: %d %s", what, got.status, got.body)
		}
	}
	if got := e.challengeValues(sub); len(got) != 0 {
		t.Fatalf("refused requests wrote %v", got)
	}
	if _, err := e.store.Gateway(t.Context(), sub); err != nil {
		t.Fatalf("the refused /unsubscribe removed the gateway: %v", err)
	}
	// From inside allowfrom the token works as ever; a gateway without
	// allowfrom is not affected from anywhere.
	e.setClientIP("192.0.2.9")
	if r := e.get("/dnsconfig", "token", key, "challenge", txtValue(2)); r.status != 200 {
		t.Fatalf("/dnsconfig from inside allowfrom: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/info", nil, key); r.status != 200 {
		t.Fatalf("/v1/info from inside allowfrom: %d %s", r.status, r.body)
	}
	plain := e.subscribe("plain")
	e.setClientIP("198.51.100.1")
	if r := e.get("/info", "token", plain); r.status != 200 {
		t.Fatalf("/info of a gateway without allowfrom: %d %s", r.status, r.body)
	}
}

// TestTunnelGetsClientIP: /v1/tunnel's handler finds the client's address
// (as ClientIP says, a trusted proxy's header included) in the request's
// context, where the tunnel handshake checks allowfrom.
func TestTunnelGetsClientIP(t *testing.T) {
	got := make(chan netip.Addr, 1)
	e := newEnv(t, "sqlite", options{tunnel: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, _ := registry.ClientIPFrom(r.Context())
		got <- ip
		w.WriteHeader(http.StatusTeapot)
	})})
	e.setClientIP("198.51.100.7")
	if r := e.get("/v1/tunnel"); r.status != http.StatusTeapot {
		t.Fatalf("/v1/tunnel: %d %s", r.status, r.body)
	}
	if ip := <-got; ip != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("the tunnel handler saw client %v", ip)
	}
}

// TestACMEDNSRegisterRateLimited: /register creates names, so it shares
// /subscribe's limit per client address.
func TestACMEDNSRegisterRateLimited(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{acmeDNSRegister: true, limits: ratelimit.New(time.Hour, 2, 0)})
		for i := range 2 {
			if r := e.acmeDNSRegister(""); r.status != 201 {
				t.Fatalf("/register %d: %d %s", i, r.status, r.body)
			}
		}
		r := e.acmeDNSRegister("")
		wantError(t, r, 429, "RateLimited")
		if r.header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		wantError(t, e.get("/subscribe", "name", "late"), 429, "RateLimited")
	})
}
