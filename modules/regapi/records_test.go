package regapi_test

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// operatorToken is the cloud operator's token in these tests.
const operatorToken = "operator-token-for-the-zone-challenge-0123456789"

// newOperatorEnv is newEnv with an operator token, compared as the Caddy
// app compares it.
func newOperatorEnv(t *testing.T, driver string) *env {
	t.Helper()
	e := &env{t: t, store: teststore.Open(t, driver), mails: newMailbox()}
	e.reg = registry.New(e.store, registry.Config{SweepInterval: time.Hour, MaxRecords: 8}, e.mails)
	e.reg.Start()
	t.Cleanup(e.reg.Stop)
	want := sha256.Sum256([]byte(operatorToken))
	api := regapi.New(e.reg, regapi.Config{
		Zone: zone,
		Operator: func(token string) bool {
			got := sha256.Sum256([]byte(token))
			return subtle.ConstantTimeCompare(got[:], want[:]) == 1
		},
	})
	e.srv = httptest.NewServer(api)
	t.Cleanup(e.srv.Close)
	e.client = e.srv.Client()
	return e
}

// recordKeys renders a records answer as "name type data ttl" lines.
func recordKeys(t *testing.T, r reply) []string {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("records: %d %s", r.status, r.body)
	}
	var out []string
	recs, _ := r.json["records"].([]any)
	for _, x := range recs {
		m := x.(map[string]any)
		out = append(out, fmt.Sprintf("%v %v %v %v", m["name"], m["type"], m["data"], m["ttl"]))
	}
	slices.Sort(out)
	return out
}

func wantKeys(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: %q, want %q", what, got, want)
	}
}

// rawRecords sends body as is, so that malformed JSON reaches the server.
func (e *env) rawRecords(method, body, token string) reply {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+"/v1/records", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req)
}

// Bad input on /v1/records: every malformed body is a 400 with a reason,
// and no request writes part of its records.
func TestV1RecordsBadInput(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newOperatorEnv(t, driver)
		token := e.subscribe("rec")
		z := zone + "."
		keep := map[string]any{"name": "_acme-challenge.rec", "type": "TXT", "data": "kept", "ttl": 60}
		if r := e.do("POST", "/v1/records", map[string]any{"zone": z, "records": []any{keep}}, token); r.status != 200 {
			t.Fatalf("append: %d %s", r.status, r.body)
		}
		before := recordKeys(t, e.do("GET", "/v1/records", nil, token))

		for _, tc := range []struct{ name, method, body string }{
			{"truncated JSON", "POST", `{"zone":"` + z + `","records":[`},
			{"trailing data", "POST", `{"zone":"` + z + `","records":[]} {}`},
			{"not an object", "PUT", `[1,2]`},
			{"records not a list", "POST", `{"zone":"` + z + `","records":{"name":"x"}}`},
			{"ttl not a number", "POST", `{"zone":"` + z + `","records":[{"name":"a.rec","type":"TXT","data":"x","ttl":"60"}]}`},
			{"invalid UTF-8", "POST", "{\"zone\":\"" + z + "\",\"records\":[{\"name\":\"a.rec\",\"type\":\"TXT\",\"data\":\"\xff\"}]}"},
			{"no records", "POST", `{"zone":"` + z + `","records":[]}`},
			{"records missing", "DELETE", `{"zone":"` + z + `"}`},
			{"type missing", "POST", `{"zone":"` + z + `","records":[{"name":"a.rec","data":"x"}]}`},
			{"data missing", "PUT", `{"zone":"` + z + `","records":[{"name":"a.rec","type":"TXT"}]}`},
			{"negative ttl", "DELETE", `{"zone":"` + z + `","records":[{"name":"a.rec","ttl":-1}]}`},
			{"control character in TXT", "POST", `{"zone":"` + z + `","records":[{"name":"a.rec","type":"TXT","data":"a\u0000b"}]}`},
			{"bad label", "POST", `{"zone":"` + z + `","records":[{"name":"a..rec","type":"TXT","data":"x"}]}`},
			{"address of the wrong family", "POST", `{"zone":"` + z + `","records":[{"name":"a.rec","type":"AAAA","data":"192.0.2.1"}]}`},
			{"CNAME with other data", "PUT", `{"zone":"` + z + `","records":[{"name":"a.rec","type":"CNAME","data":"x.example."},{"name":"a.rec","type":"TXT","data":"x"}]}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.rawRecords(tc.method, tc.body, token)
				if r.status != 400 || r.str("reason") == "" {
					t.Fatalf("got %d %s, want 400 with a reason", r.status, r.body)
				}
			})
		}
		wantError(t, e.rawRecords("POST", `{"zone":"`+z+`","records":[{"name":"a.rec","type":"TXT","data":"`+strings.Repeat("x", 70<<10)+`"}]}`, token), 413, "BodyTooLarge")
		wantError(t, e.rawRecords("POST", `{"zone":"`+z+`","records":[{"name":"a.rec","type":"MX","data":"10 mx.example."}]}`, token), 400, "UnsupportedType")

		// One bad record fails the whole request: the good ones before
		// and after it are not written.
		good := func(v string) map[string]any {
			return map[string]any{"name": "_acme-challenge.rec", "type": "TXT", "data": v}
		}
		for _, tc := range []struct {
			method string
			bad    map[string]any
			status int
		}{
			{"POST", map[string]any{"name": "w.rec", "type": "A", "data": "::1"}, 400},
			{"PUT", map[string]any{"name": "w.rec", "type": "A", "data": "not-an-address"}, 400},
			{"POST", map[string]any{"name": "_acme-challenge.other", "type": "TXT", "data": "x"}, 403},
			{"PUT", map[string]any{"name": "_acme-challenge", "type": "TXT", "data": "x"}, 403},
			{"DELETE", map[string]any{"name": "www.other", "type": "TXT"}, 403},
		} {
			r := e.do(tc.method, "/v1/records", map[string]any{"zone": z, "records": []any{good("new1"), tc.bad, good("new2")}}, token)
			if r.status != tc.status || r.str("reason") == "" {
				t.Fatalf("%s with %v: got %d %s, want %d with a reason", tc.method, tc.bad, r.status, r.body, tc.status)
			}
		}
		// More records than the gateway may hold: nothing is written
		// either, not even for a set that cleared its RRsets first.
		var many []any
		for i := range 9 {
			many = append(many, good(fmt.Sprintf("v%d", i)))
		}
		wantError(t, e.do("POST", "/v1/records", map[string]any{"zone": z, "records": many}, token), 400, "TooManyRecords")
		wantError(t, e.do("PUT", "/v1/records", map[string]any{"zone": z, "records": many}, token), 400, "TooManyRecords")
		wantKeys(t, "after the failed requests", recordKeys(t, e.do("GET", "/v1/records", nil, token)), before...)
	})
}

// Another gateway's token, a missing or unknown token: nothing is read or
// written in the gateway's subtree.
func TestV1RecordsOtherGateway(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newOperatorEnv(t, driver)
		token := e.subscribe("rec")
		other := e.subscribe("other")
		z := zone + "."
		rec := map[string]any{"name": "_acme-challenge.rec", "type": "TXT", "data": "mine", "ttl": 60}
		if r := e.do("POST", "/v1/records", map[string]any{"zone": z, "records": []any{rec}}, token); r.status != 200 {
			t.Fatalf("append: %d %s", r.status, r.body)
		}
		for _, method := range []string{"POST", "PUT", "DELETE"} {
			wantError(t, e.do(method, "/v1/records", map[string]any{"zone": z, "records": []any{rec}}, other), 403, "OutsideSubtree")
			wantError(t, e.do(method, "/v1/records", map[string]any{"zone": "rec." + z, "records": []any{map[string]any{"name": "@", "type": "TXT", "data": "x"}}}, other), 403, "OutsideSubtree")
		}
		wantError(t, e.do("GET", "/v1/records?zone=rec."+z, nil, other), 403, "OutsideSubtree")
		// A zone above the name does not leak the records below it.
		if got := recordKeys(t, e.do("GET", "/v1/records?zone="+z, nil, other)); len(got) != 0 {
			t.Fatalf("the other gateway reads %q", got)
		}
		wantError(t, e.do("DELETE", "/v1/records", map[string]any{"zone": z, "records": []any{rec}}, ""), 401, "Unauthorized")
		unknown, _ := registry.NewToken()
		wantError(t, e.do("DELETE", "/v1/records", map[string]any{"zone": z, "records": []any{rec}}, unknown), 401, "Unauthorized")
		wantKeys(t, "the gateway's records", recordKeys(t, e.do("GET", "/v1/records", nil, token)), "_acme-challenge.rec TXT mine 60")
	})
}

// DeleteRecords with libdns semantics: a record is deleted when every field
// given matches it, whatever notation the value or TTL was given in.
func TestV1RecordsDeleteExactMatch(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newOperatorEnv(t, driver)
		token := e.subscribe("rec")
		z := "rec." + zone + "."
		send := func(method string, recs ...map[string]any) reply {
			return e.do(method, "/v1/records", map[string]any{"zone": z, "records": recs}, token)
		}
		if r := send("POST",
			map[string]any{"name": "v6", "type": "AAAA", "data": "2001:db8::1", "ttl": 300},
			map[string]any{"name": "alias", "type": "CNAME", "data": "target.example.", "ttl": 300},
			map[string]any{"name": "short", "type": "TXT", "data": "clamped", "ttl": 5},
		); r.status != 200 {
			t.Fatalf("append: %d %s", r.status, r.body)
		}
		// A TTL that differs from the stored one: nothing is deleted.
		if got := recordKeys(t, send("DELETE", map[string]any{"name": "v6", "type": "AAAA", "data": "2001:db8::1", "ttl": 600})); len(got) != 0 {
			t.Fatalf("delete with another TTL removed %q", got)
		}
		wantKeys(t, "delete in another notation",
			recordKeys(t, send("DELETE",
				map[string]any{"name": "V6", "type": "aaaa", "data": "2001:DB8:0::1", "ttl": 300},
				map[string]any{"name": "alias", "type": "CNAME", "data": "Target.Example"},
				// Written with 5s, stored with the 30s minimum: the
				// same 5s names it.
				map[string]any{"name": "short", "type": "TXT", "data": "clamped", "ttl": 5},
			)),
			"alias CNAME target.example. 300", "short TXT clamped 30", "v6 AAAA 2001:db8::1 300")
		wantKeys(t, "left", recordKeys(t, e.do("GET", "/v1/records?zone="+z, nil, token)))
	})
}

// The operator token manages the zone's own ACME challenge, and nothing
// else; gateway tokens cannot touch it.
func TestV1RecordsOperator(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newOperatorEnv(t, driver)
		gw := e.subscribe("rec")
		z := zone + "."
		op := func(method, zone string, recs ...map[string]any) reply {
			return e.do(method, "/v1/records", map[string]any{"zone": zone, "records": recs}, operatorToken)
		}
		txt := func(name, data string) map[string]any {
			return map[string]any{"name": name, "type": "TXT", "data": data, "ttl": 60}
		}
		if r := e.do("GET", "/v1/zones", nil, operatorToken); r.status != 200 || string(r.body) != `{"zones":[{"name":"`+z+`"}]}`+"\n" {
			t.Fatalf("operator zones: %d %s", r.status, r.body)
		}
		wantKeys(t, "append", recordKeys(t, op("POST", z, txt("_acme-challenge", "one"), txt("_acme-challenge", "two"))),
			"_acme-challenge TXT one 60", "_acme-challenge TXT two 60")
		// The challenge name taken as the zone.
		wantKeys(t, "get in the challenge zone", recordKeys(t, e.do("GET", "/v1/records?zone=_acme-challenge."+z, nil, operatorToken)),
			"@ TXT one 60", "@ TXT two 60")
		wantKeys(t, "set", recordKeys(t, op("PUT", "_acme-challenge."+z, txt("@", "three"))), "@ TXT three 60")
		wantKeys(t, "get", recordKeys(t, e.do("GET", "/v1/records?zone="+z, nil, operatorToken)), "_acme-challenge TXT three 60")

		// Nothing else: not another name, type or zone, not a gateway's
		// records, and not the rest of the API.
		for _, tc := range []struct {
			method, zone string
			rec          map[string]any
		}{
			{"POST", z, txt("www", "x")},
			{"POST", z, txt("@", "x")},
			{"POST", z, txt("_acme-challenge.rec", "x")},
			{"POST", z, txt("_acme-challenge.deeper", "x")},
			{"POST", z, map[string]any{"name": "_acme-challenge", "type": "A", "data": "192.0.2.1"}},
			{"PUT", z, map[string]any{"name": "_acme-challenge", "type": "CNAME", "data": "elsewhere.example."}},
			{"POST", "rec." + z, txt("_acme-challenge", "x")},
			{"POST", "example.org.", txt("_acme-challenge", "x")},
			{"DELETE", z, map[string]any{"name": "_acme-challenge.rec"}},
			{"DELETE", z, map[string]any{"name": "_acme-challenge", "type": "A"}},
			{"DELETE", z, map[string]any{"name": "api"}},
		} {
			wantError(t, op(tc.method, tc.zone, txt("_acme-challenge", "alongside"), tc.rec), 403, "OutsideSubtree")
		}
		wantError(t, e.do("GET", "/v1/records?zone=rec."+z, nil, operatorToken), 403, "OutsideSubtree")
		wantError(t, e.do("GET", "/v1/info", nil, operatorToken), 401, "Unauthorized")
		wantError(t, e.do("POST", "/v1/ping", nil, operatorToken), 401, "Unauthorized")
		wantError(t, e.do("DELETE", "/v1/gateway", nil, operatorToken), 404, "NotFound")
		// A gateway cannot write the zone's challenge, nor read it.
		wantError(t, e.do("POST", "/v1/records", map[string]any{"zone": z, "records": []any{txt("_acme-challenge", "evil")}}, gw), 403, "OutsideSubtree")
		wantError(t, e.do("DELETE", "/v1/records", map[string]any{"zone": "_acme-challenge." + z, "records": []any{map[string]any{"name": "@"}}}, gw), 403, "OutsideSubtree")
		if got := recordKeys(t, e.do("GET", "/v1/records", nil, gw)); len(got) != 0 {
			t.Fatalf("a gateway reads the zone's records: %q", got)
		}
		// A near miss of the operator token is an unknown token.
		wantError(t, e.do("GET", "/v1/zones", nil, operatorToken[:len(operatorToken)-1]), 401, "Unauthorized")
		wantKeys(t, "untouched", recordKeys(t, e.do("GET", "/v1/records?zone="+z, nil, operatorToken)), "_acme-challenge TXT three 60")

		// Delete, with libdns wildcards.
		wantKeys(t, "delete", recordKeys(t, op("DELETE", z, map[string]any{"name": "_acme-challenge", "type": "TXT"})), "_acme-challenge TXT three 60")
		wantKeys(t, "after delete", recordKeys(t, e.do("GET", "/v1/records?zone="+z, nil, operatorToken)))
	})
}

// Without an operator configured, no token reaches the zone's records.
func TestV1RecordsNoOperator(t *testing.T) {
	e := newEnv(t, "sqlite", options{})
	r := e.do("POST", "/v1/records", map[string]any{"zone": zone + ".", "records": []any{map[string]any{"name": "_acme-challenge", "type": "TXT", "data": "x"}}}, operatorToken)
	wantError(t, r, 401, "Unauthorized")
}
