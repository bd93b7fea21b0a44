package cloudapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The three /v1/domains calls against a server answering as the contract
// says (docs/api.md): the request shapes, the answers, and what each
// error matches.
func TestDomainCalls(t *testing.T) {
	held := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer t1" {
			w.WriteHeader(401)
			w.Write([]byte(`{"error":"Unauthorized"}`))
			return
		}
		fail := func(status int, code, reason string) {
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(map[string]string{"error": code, "reason": reason})
		}
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/domains":
			var body struct{ Domain string }
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				fail(400, "BadRequest", err.Error())
				return
			}
			switch body.Domain {
			case "other.example.com":
				fail(409, "DomainTaken", "held by another gateway")
			case "x.box.test":
				fail(400, "InvalidDomain", "inside the zone")
			case "home.example.com":
				held[body.Domain] = true
				w.Write([]byte(`{"domain":"home.example.com","gateway":"myhome","checked_at":"2026-12-04T17:00:00Z"}`))
			default:
				fail(422, "DomainNotDelegated", body.Domain+" has no CNAME to myhome.box.test.")
			}
		case r.URL.Path == "/old/v1/domains":
			fail(404, "NotFound", "custom domains are not enabled on this server")
		case r.Method == "GET" && r.URL.Path == "/v1/domains":
			out := []Domain{}
			for d := range held {
				out = append(out, Domain{Domain: d, Gateway: "myhome"})
			}
			json.NewEncoder(w).Encode(map[string]any{"domains": out})
		case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/v1/domains/"):
			d := strings.TrimPrefix(r.URL.Path, "/v1/domains/")
			if !held[d] {
				fail(404, "NoSuchDomain", "")
				return
			}
			delete(held, d)
			w.Write([]byte(`{}`))
		default:
			fail(404, "NotFound", "")
		}
	}))
	defer srv.Close()
	c := &Client{Endpoint: srv.URL}
	ctx := context.Background()

	d, err := c.ClaimDomain(ctx, "t1", "home.example.com")
	if err != nil || d.Gateway != "myhome" || d.CheckedAt.IsZero() {
		t.Fatalf("claim: %+v %v", d, err)
	}
	_, err = c.ClaimDomain(ctx, "t1", "new.example.com")
	if !errors.Is(err, ErrDomainNotDelegated) || errors.Is(err, ErrDomainRefused) || !strings.Contains(Explain(err), "no CNAME to myhome.box.test.") {
		t.Fatalf("not delegated: %v / %s", err, Explain(err))
	}
	for _, dom := range []string{"other.example.com", "x.box.test"} {
		if _, err := c.ClaimDomain(ctx, "t1", dom); !errors.Is(err, ErrDomainRefused) || errors.Is(err, ErrDomainNotDelegated) {
			t.Fatalf("%s: %v", dom, err)
		}
	}
	if _, err := c.ClaimDomain(ctx, "t1", "other.example.com"); !errors.Is(err, ErrDomainTaken) {
		t.Fatalf("taken: %v", err)
	}
	if _, err := c.ClaimDomain(ctx, "t1", "x.box.test"); errors.Is(err, ErrDomainTaken) {
		t.Fatalf("inside the zone is not taken: %v", err)
	}
	if _, err := c.ClaimDomain(ctx, "stale", "home.example.com"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("stale token: %v", err)
	}
	list, err := c.Domains(ctx, "t1")
	if err != nil || len(list) != 1 || list[0].Domain != "home.example.com" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := c.ReleaseDomain(ctx, "t1", "home.example.com"); err != nil {
		t.Fatal(err)
	}
	// A cloud without custom domains is not a refused token.
	old := &Client{Endpoint: srv.URL + "/old"}
	if _, err := old.Domains(ctx, "t1"); !errors.Is(err, ErrDomainsUnsupported) || errors.Is(err, ErrTokenRefused) {
		t.Fatalf("a cloud without custom domains: %v", err)
	}
	// Released twice: the second finds nothing, which is what was asked.
	if err := c.ReleaseDomain(ctx, "t1", "home.example.com"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if list, err := c.Domains(ctx, "t1"); err != nil || len(list) != 0 {
		t.Fatalf("after release: %+v %v", list, err)
	}
}
