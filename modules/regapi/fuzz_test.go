package regapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cnamedns"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/domaincheck"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// FuzzQuery sends arbitrary query strings and /v1 bodies to every endpoint.
// Whatever comes in, the API answers with a status below 500 and, for
// errors, a JSON reason; and it registers a name only when it said so.
func FuzzQuery(f *testing.F) {
	for _, seed := range []struct{ path, query, body string }{
		{"/subscribe", "name=myhome&desc=x&mode=dynamic", ""},
		{"/subscribe", "name=a&reclamationToken=", ""},
		{"/ping", "token=%zz", ""},
		{"/ping", "token=abc&local_ip=1.2.3.4,::1", ""},
		{"/setemail", "token=x&email=a@b.c&optout=true", ""},
		{"/verifyemail", "s=\xff", ""},
		{"/dnsconfig", "token=x&challenge=abc", ""},
		{"/v1/subscribe", "", `{"mac":"00:11:22:33:44:55"}`},
		{"/v1/subscribe", "", `{"name":"x","description":"\u0000"}`},
		{"/v1/records", "", `{"zone":"box.example.org.","records":[{"name":"@","type":"TXT","data":"x"}]}`},
		{"/register", "", `{"allowfrom":["192.0.2.0/24","[2001:db8::]/32"]}`},
		{"/register", "", `{"allowfrom":"x"}`},
		{"/v1/domains", "", `{"domain":"home.example.com"}`},
		{"/v1/domains/home.example.com", "", ""},
	} {
		f.Add(seed.path, seed.query, seed.body)
	}
	store := teststore.Open(f, "sqlite")
	reg := registry.New(store, registry.Config{SweepInterval: time.Hour}, discardMail{})
	reg.Start()
	f.Cleanup(reg.Stop)
	dns := cnamedns.Start(f)
	checker, err := domaincheck.New([]string{dns.Addr}, 100*time.Millisecond)
	if err != nil {
		f.Fatal(err)
	}
	domains := registry.NewDomains(reg, registry.DomainsConfig{Zone: zone, Check: checker.Check})
	api := regapi.New(reg, regapi.Config{Zone: zone, ClientIP: func(*http.Request) netip.Addr { return netip.MustParseAddr("192.0.2.1") },
		ACMEDNSRegister: true, Domains: domains})
	paths := []string{"/subscribe", "/unsubscribe", "/reclaim", "/ping", "/dnsconfig", "/info", "/setemail",
		"/verifyemail", "/revokeemail", "/connectivity-check", "/v1/subscribe", "/v1/ping", "/v1/info",
		"/v1/email", "/v1/reclaim", "/v1/gateway", "/v1/discover", "/v1/records", "/v1/zones",
		"/register", "/update", "/v1/domains", "/v1/domains/x.example.com"}

	f.Fuzz(func(t *testing.T, path, query, body string) {
		if !strings.HasPrefix(path, "/") {
			path = paths[len(path)%len(paths)]
		}
		for _, method := range []string{"GET", "POST", "PUT", "DELETE"} {
			before, _ := store.CountGateways(context.Background())
			req := httptest.NewRequest("GET", "/", strings.NewReader(body))
			req.Method = method
			req.URL.Path, req.URL.RawQuery = path, query
			w := httptest.NewRecorder()
			api.ServeHTTP(w, req)
			if w.Code >= 500 {
				t.Fatalf("%s %s?%q: status %d: %s", method, path, query, w.Code, w.Body)
			}
			after, _ := store.CountGateways(context.Background())
			registered := w.Code == 200 || w.Code == 201
			if after > before && !(registered && (strings.HasSuffix(path, "subscribe") || path == "/register")) {
				t.Fatalf("%s %s?%q registered a gateway while answering %d", method, path, query, w.Code)
			}
			if w.Code >= 400 && w.Header().Get("Content-Type") == "application/json" {
				var e struct{ Error, Reason string }
				if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == "" {
					t.Fatalf("%s %s: error without a JSON name: %s", method, path, w.Body)
				}
			}
		}
	})
}

// discardMail accepts every mail, so the email flows run to the end.
type discardMail struct{}

func (discardMail) SendVerification(context.Context, string, string, string) error { return nil }
func (discardMail) SendReclamation(context.Context, string, string, string) error  { return nil }
