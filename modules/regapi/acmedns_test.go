package regapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// txtValue is a 43-character DNS-01 value, distinct per i.
func txtValue(i int) string {
	return strings.Repeat("A", 40) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + "_"
}

func (e *env) acmeDNSUpdate(user, key, body string) reply {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+"/update", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("X-Api-User", user)
	}
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	return e.send(req)
}

func (e *env) challengeValues(name string) []string {
	e.t.Helper()
	recs, err := e.reg.Records(e.t.Context(), registry.GatewaySubtree(name))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, rec := range recs {
		if rec.Owner == "_acme-challenge" && rec.Type == "TXT" {
			out = append(out, rec.Value)
		}
	}
	slices.Sort(out)
	return out
}

func updateBody(sub, txt string) string {
	return `{"subdomain":"` + sub + `","txt":"` + txt + `"}`
}

func TestACMEDNSUpdateRollsTwoValues(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		token := e.subscribe("home")
		// The gateway's other TXT records are not the rolling ones.
		if r := e.do("POST", "/v1/records", map[string]any{"records": []map[string]any{{"name": "_acme-challenge.www.home", "type": "TXT", "data": "keep"}}}, token); r.status != 200 {
			t.Fatalf("records: %d %s", r.status, r.body)
		}
		if r := e.acmeDNSUpdate("home", token, updateBody("home", txtValue(0))); r.status != 200 || r.str("txt") != txtValue(0) {
			t.Fatalf("first update: %d %s", r.status, r.body)
		}
		if got := e.challengeValues("home"); !slices.Equal(got, []string{txtValue(0)}) {
			t.Fatalf("after one update: %v", got)
		}
		for i := 1; i <= 3; i++ {
			if r := e.acmeDNSUpdate("home", token, updateBody("home", txtValue(i))); r.status != 200 {
				t.Fatalf("update %d: %d %s", i, r.status, r.body)
			}
			want := []string{txtValue(i - 1), txtValue(i)}
			slices.Sort(want)
			if got := e.challengeValues("home"); !slices.Equal(got, want) {
				t.Fatalf("after update %d: %v, want the last two %v", i, got, want)
			}
		}
		// Sending the newest value again changes nothing.
		if r := e.acmeDNSUpdate("HOME", token, updateBody("Home", txtValue(3))); r.status != 200 {
			t.Fatalf("repeat: %d %s", r.status, r.body)
		}
		if got := e.challengeValues("home"); len(got) != 2 {
			t.Fatalf("after a repeat: %v", got)
		}
		recs, err := e.reg.Records(t.Context(), registry.GatewaySubtree("home"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(recs, func(r registry.Record) bool { return r.Owner == "_acme-challenge.www" && r.Value == "keep" }) {
			t.Fatalf("the rolling update dropped another name's record: %v", recs)
		}
	})
}

func TestACMEDNSUpdateConcurrentKeepsNewestTwo(t *testing.T) {
	e := newEnv(t, "sqlite", options{})
	token := e.subscribe("home")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if r := e.acmeDNSUpdate("home", token, updateBody("home", txtValue(i))); r.status != 200 {
				t.Errorf("update %d: %d %s", i, r.status, r.body)
			}
		})
	}
	wg.Wait()
	if got := e.challengeValues("home"); len(got) != 2 {
		t.Fatalf("after 8 concurrent updates: %v, want two values", got)
	}
}

func TestACMEDNSUpdateErrors(t *testing.T) {
	e := newEnv(t, "sqlite", options{})
	token := e.subscribe("home")
	other := e.subscribe("other")
	good := updateBody("home", txtValue(0))
	for _, c := range []struct {
		what, user, key, body string
		status                int
		name                  string
	}{
		{"no headers", "", "", good, 401, "forbidden"},
		{"no key", "home", "", good, 401, "forbidden"},
		{"wrong key", "home", strings.Repeat("x", 43), good, 401, "forbidden"},
		{"malformed key", "home", "short", good, 401, "forbidden"},
		{"another gateway's key", "home", other, good, 401, "forbidden"},
		{"wrong subdomain", "home", token, updateBody("other", txtValue(0)), 403, "forbidden"},
		{"no subdomain", "home", token, `{"txt":"` + txtValue(0) + `"}`, 400, "bad_subdomain"},
		{"short txt", "home", token, updateBody("home", txtValue(0)[:42]), 400, "bad_txt"},
		{"long txt", "home", token, updateBody("home", txtValue(0)+"A"), 400, "bad_txt"},
		{"txt outside base64url", "home", token, updateBody("home", txtValue(0)[:42]+"="), 400, "bad_txt"},
		{"txt with a quote", "home", token, `{"subdomain":"home","txt":"` + txtValue(0)[:41] + `\"A"}`, 400, "bad_txt"},
		{"not JSON", "home", token, `subdomain=home`, 400, "malformed_json_payload"},
		{"two objects", "home", token, good + good, 400, "malformed_json_payload"},
	} {
		r := e.acmeDNSUpdate(c.user, c.key, c.body)
		if r.status != c.status || r.str("error") != c.name || r.str("reason") == "" {
			t.Errorf("%s: got %d %s, want %d {\"error\":%q,\"reason\":…}", c.what, r.status, r.body, c.status, c.name)
		}
	}
	if got := e.challengeValues("home"); len(got) != 0 {
		t.Fatalf("refused updates wrote %v", got)
	}
	if got := e.challengeValues("other"); len(got) != 0 {
		t.Fatalf("refused updates wrote %v to another gateway", got)
	}
	// A disabled gateway's key is refused as acme-dns refuses a wrong one,
	// not answered as a database error.
	if _, err := e.reg.SetDisabled(context.Background(), "home", true); err != nil {
		t.Fatal(err)
	}
	if r := e.acmeDNSUpdate("home", token, good); r.status != 401 || r.str("error") != "forbidden" {
		t.Fatalf("disabled gateway: %d %s", r.status, r.body)
	}
	if got := e.challengeValues("home"); len(got) != 0 {
		t.Fatalf("a disabled gateway's update wrote %v", got)
	}
}

func TestACMEDNSHealth(t *testing.T) {
	e := newEnv(t, "sqlite", options{})
	r := e.raw("/health")
	if r.status != 200 || len(r.body) != 0 {
		t.Fatalf("/health: %d %q", r.status, r.body)
	}
	if r := e.do("POST", "/register", map[string]any{}, ""); r.status != 404 {
		t.Fatalf("/register while not enabled: %d %s", r.status, r.body)
	}
}

// FuzzACMEDNSUpdate sends arbitrary users, keys and bodies to /update with
// one real gateway's token among the candidates: the API never answers 500,
// every error has acme-dns's JSON shape with a reason, a 200 echoes a
// well-formed value, and no more than two values are ever held.
func FuzzACMEDNSUpdate(f *testing.F) {
	f.Add("home", true, `{"subdomain":"home","txt":"`+txtValue(0)+`"}`)
	f.Add("home", true, `{"subdomain":"home","txt":"`+txtValue(0)[:42]+`\u00e9"}`)
	f.Add("HOME", true, `{"subdomain":"other","txt":1}`)
	f.Add("home", false, `{"subdomain":"home","txt":"`+txtValue(1)+`"}`)
	f.Add("", true, `[]`)
	f.Add("home", true, `{"subdomain":"home","txt":null}{}`)
	store := teststore.Open(f, "sqlite")
	reg := registry.New(store, registry.Config{SweepInterval: time.Hour}, discardMail{})
	reg.Start()
	f.Cleanup(reg.Stop)
	sub, err := reg.Subscribe(context.Background(), registry.SubscribeRequest{Name: "home"})
	if err != nil {
		f.Fatal(err)
	}
	api := regapi.New(reg, regapi.Config{Zone: zone})
	f.Fuzz(func(t *testing.T, user string, realKey bool, body string) {
		key := "not-a-token"
		if realKey {
			key = sub.Token
		}
		req := httptest.NewRequest("POST", "/update", strings.NewReader(body))
		req.Header.Set("X-Api-User", user)
		req.Header.Set("X-Api-Key", key)
		w := httptest.NewRecorder()
		api.ServeHTTP(w, req)
		var ans struct{ TXT, Error, Reason string }
		if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
			t.Fatalf("%d: not JSON: %q", w.Code, w.Body)
		}
		switch {
		case w.Code == 200:
			if len(ans.TXT) != 43 || !realKey || !strings.EqualFold(user, "home") {
				t.Fatalf("accepted %q from user %q (real key %v)", ans.TXT, user, realKey)
			}
		case w.Code >= 500:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		case ans.Error == "" || ans.Reason == "":
			t.Fatalf("%d without error and reason: %s", w.Code, w.Body)
		}
		recs, err := reg.Records(context.Background(), registry.GatewaySubtree("home"))
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > registry.RollingChallenges {
			t.Fatalf("%d challenge values held", len(recs))
		}
	})
}
