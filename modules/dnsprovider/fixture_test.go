package dnsprovider

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fixture is an in-memory implementation of the records part of the
// Gatehouse /v1 API (docs/api.md), for one gateway. It is a test double
// only: the real handler lives elsewhere and is checked with libdnstest.
type fixture struct {
	srv     *httptest.Server
	zone    string // the Gatehouse zone, "box.example.org."
	subtree string // the gateway's NAME.ZONE, "myhome.box.example.org."
	token   string

	// fault, when set, sees each request first and may answer it itself
	// (returning true) to inject failures.
	fault atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
	calls atomic.Int64

	mu   sync.Mutex
	recs []fixRecord
}

type fixRecord struct {
	owner string // absolute, lower case, with the trailing dot
	typ   string
	data  string
	ttl   int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{zone: "box.example.org.", subtree: "myhome.box.example.org.", token: "gh_test-token"}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// provider returns a Provider pointed at the fixture.
func (f *fixture) provider() *Provider {
	return &Provider{Endpoint: f.srv.URL, Token: f.token, HTTPClient: f.srv.Client()}
}

func (f *fixture) setFault(fn func(http.ResponseWriter, *http.Request) bool) {
	if fn == nil {
		f.fault.Store(nil)
		return
	}
	f.fault.Store(&fn)
}

// seed adds records directly, owners relative to the Gatehouse zone.
func (f *fixture) seed(recs ...fixRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range recs {
		r.owner += "." + f.zone
		f.recs = append(f.recs, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, name, reason string) {
	writeJSON(w, status, map[string]string{"error": name, "reason": reason})
}

func (f *fixture) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if fn := f.fault.Load(); fn != nil && (*fn)(w, r) {
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		writeError(w, http.StatusUnauthorized, "Unauthorized", "missing or unknown token")
		return
	}
	switch {
	case r.URL.Path == "/v1/zones" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"zones": []map[string]string{{"name": f.zone}}})
	case r.URL.Path == "/v1/records" && r.Method == http.MethodGet:
		zone, ok := f.checkZone(w, r.URL.Query().Get("zone"))
		if ok {
			writeJSON(w, http.StatusOK, recordsResponse{Records: f.list(zone)})
		}
	case r.URL.Path == "/v1/records" && slices.Contains([]string{http.MethodPost, http.MethodPut, http.MethodDelete}, r.Method):
		f.change(w, r)
	default:
		writeError(w, http.StatusNotFound, "NotFound", "no such endpoint")
	}
}

// checkZone accepts the Gatehouse zone or a name in the gateway's subtree.
func (f *fixture) checkZone(w http.ResponseWriter, zone string) (string, bool) {
	zone = strings.ToLower(zone)
	if !strings.HasSuffix(zone, ".") {
		writeError(w, http.StatusBadRequest, "BadRequest", "zone must be fully qualified")
		return "", false
	}
	if zone != f.zone && !f.inSubtree(zone) {
		writeError(w, http.StatusForbidden, "OutsideSubtree", "zone "+zone+" is outside the gateway's subtree")
		return "", false
	}
	return zone, true
}

func (f *fixture) inSubtree(name string) bool {
	return name == f.subtree || strings.HasSuffix(name, "."+f.subtree)
}

func below(name, zone string) bool { return name == zone || strings.HasSuffix(name, "."+zone) }

func relative(owner, zone string) string {
	if owner == zone {
		return "@"
	}
	return strings.TrimSuffix(owner, "."+zone)
}

func (f *fixture) list(zone string) []record {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []record{}
	for _, r := range f.recs {
		if below(r.owner, zone) {
			out = append(out, record{Name: relative(r.owner, zone), Type: r.typ, Data: r.data, TTL: r.ttl})
		}
	}
	return out
}

func (f *fixture) change(w http.ResponseWriter, r *http.Request) {
	var in recordsRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields() // the provider must use exactly the documented fields
	if err := dec.Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", "bad json: "+err.Error())
		return
	}
	zone, ok := f.checkZone(w, in.Zone)
	if !ok {
		return
	}
	deleting := r.Method == http.MethodDelete
	// Validate everything first: a request applies entirely or not at all.
	recs := make([]fixRecord, 0, len(in.Records))
	for _, rec := range in.Records {
		if rec.Name == "" {
			writeError(w, http.StatusBadRequest, "BadRequest", "record without a name")
			return
		}
		owner := zone
		if rec.Name != "@" {
			owner = strings.ToLower(rec.Name) + "." + zone
		}
		if !f.inSubtree(owner) {
			writeError(w, http.StatusForbidden, "OutsideSubtree", owner+" is outside the gateway's subtree")
			return
		}
		if rec.TTL < 0 {
			writeError(w, http.StatusBadRequest, "BadRequest", "negative ttl")
			return
		}
		if !(deleting && rec.Type == "") && !supportedTypes[rec.Type] {
			writeError(w, http.StatusBadRequest, "UnsupportedType", "type "+rec.Type+" is not served")
			return
		}
		if !(deleting && rec.Data == "") && !validData(rec.Type, rec.Data) {
			writeError(w, http.StatusBadRequest, "BadRequest", "bad data for "+rec.Type)
			return
		}
		recs = append(recs, fixRecord{owner: owner, typ: rec.Type, data: rec.Data, ttl: rec.TTL})
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	var done []fixRecord
	switch r.Method {
	case http.MethodPost:
		for _, rec := range recs {
			if !slices.ContainsFunc(f.recs, func(e fixRecord) bool { return sameRR(e, rec) }) {
				f.recs = append(f.recs, rec)
				done = append(done, rec)
			}
		}
	case http.MethodPut:
		f.recs = slices.DeleteFunc(f.recs, func(e fixRecord) bool {
			return slices.ContainsFunc(recs, func(n fixRecord) bool { return n.owner == e.owner && n.typ == e.typ })
		})
		for _, rec := range recs {
			if !slices.ContainsFunc(f.recs, func(e fixRecord) bool { return sameRR(e, rec) }) {
				f.recs = append(f.recs, rec)
			}
			done = append(done, rec)
		}
	case http.MethodDelete:
		f.recs = slices.DeleteFunc(f.recs, func(e fixRecord) bool {
			for _, m := range recs {
				if m.owner == e.owner && (m.typ == "" || m.typ == e.typ) &&
					(m.data == "" || m.data == e.data) && (m.ttl == 0 || m.ttl == e.ttl) {
					done = append(done, e)
					return true
				}
			}
			return false
		})
	}
	out := recordsResponse{Records: []record{}}
	for _, rec := range done {
		out.Records = append(out.Records, record{Name: relative(rec.owner, zone), Type: rec.typ, Data: rec.data, TTL: rec.ttl})
	}
	writeJSON(w, http.StatusOK, out)
}

// sameRR: DNS has no duplicate records; the TTL belongs to the RRset.
func sameRR(a, b fixRecord) bool { return a.owner == b.owner && a.typ == b.typ && a.data == b.data }

func validData(typ, data string) bool {
	switch typ {
	case "A", "AAAA":
		ip, err := netip.ParseAddr(data)
		return err == nil && ip.Is4() == (typ == "A")
	case "CNAME", "TXT":
		return data != ""
	}
	return false
}
