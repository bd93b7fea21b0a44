package dnsprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/libdns/libdns/libdnstest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLibdnsSuite runs the libdns conformance suite against the fixture,
// in the gateway's own subtree (the test-* names must be inside it). The
// types the API does not serve are skipped, and so is ListZones: the API
// lists the Gatehouse zone, not the subtree the suite works in (see
// TestListZones).
func TestLibdnsSuite(t *testing.T) {
	f := newFixture(t)
	suite := libdnstest.NewTestSuite(libdnstest.WrapNoZoneLister(f.provider()), f.subtree)
	suite.SkipRRTypes = map[string]bool{"MX": true, "SRV": true, "CAA": true, "NS": true, "SVCB": true, "HTTPS": true}
	suite.Timeout = 10 * time.Second
	suite.RunTests(t)
}

func TestListZones(t *testing.T) {
	f := newFixture(t)
	zones, err := f.provider().ListZones(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(zones, []libdns.Zone{{Name: "box.example.org."}}) {
		t.Fatalf("zones %v", zones)
	}
}

func TestGetRecordsTyped(t *testing.T) {
	f := newFixture(t)
	f.seed(
		fixRecord{owner: "_acme-challenge.myhome", typ: "TXT", data: "challenge-1", ttl: 60},
		fixRecord{owner: "myhome", typ: "A", data: "192.0.2.7", ttl: 300},
		fixRecord{owner: "myhome", typ: "AAAA", data: "2001:db8::7", ttl: 300},
		fixRecord{owner: "www.myhome", typ: "CNAME", data: "myhome.box.example.org.", ttl: 3600},
	)
	p := f.provider()

	// Without the trailing dot, the zone is still understood.
	got, err := p.GetRecords(context.Background(), "box.example.org")
	if err != nil {
		t.Fatal(err)
	}
	want := []libdns.Record{
		libdns.TXT{Name: "_acme-challenge.myhome", TTL: time.Minute, Text: "challenge-1"},
		libdns.Address{Name: "myhome", TTL: 5 * time.Minute, IP: netip.MustParseAddr("192.0.2.7")},
		libdns.Address{Name: "myhome", TTL: 5 * time.Minute, IP: netip.MustParseAddr("2001:db8::7")},
		libdns.CNAME{Name: "www.myhome", TTL: time.Hour, Target: "myhome.box.example.org."},
	}
	checkRecords(t, got, want)

	// Relative to the subtree, the gateway's own name is "@".
	got, err = p.GetRecords(context.Background(), "myhome.box.example.org.")
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, got, []libdns.Record{
		libdns.TXT{Name: "_acme-challenge", TTL: time.Minute, Text: "challenge-1"},
		libdns.Address{Name: "@", TTL: 5 * time.Minute, IP: netip.MustParseAddr("192.0.2.7")},
		libdns.Address{Name: "@", TTL: 5 * time.Minute, IP: netip.MustParseAddr("2001:db8::7")},
		libdns.CNAME{Name: "www", TTL: time.Hour, Target: "myhome.box.example.org."},
	})
}

// checkRecords compares records by their concrete types and values.
func checkRecords(t *testing.T, got, want []libdns.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range got {
		if fmt.Sprintf("%T %+v", got[i], got[i]) != fmt.Sprintf("%T %+v", want[i], want[i]) {
			t.Fatalf("record %d: got %T %+v, want %T %+v", i, got[i], got[i], want[i], want[i])
		}
	}
}

// TestChallengeLifecycle goes through what CertMagic does for DNS-01, with
// several values at once as for a certificate covering NAME and *.NAME.
func TestChallengeLifecycle(t *testing.T) {
	f := newFixture(t)
	p := f.provider()
	ctx := context.Background()
	const zone = "box.example.org."
	txt := func(v string) libdns.TXT {
		return libdns.TXT{Name: "_acme-challenge.myhome", TTL: time.Minute, Text: v}
	}

	added, err := p.AppendRecords(ctx, zone, []libdns.Record{txt("one"), txt("two")})
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, added, []libdns.Record{txt("one"), txt("two")})

	set, err := p.SetRecords(ctx, zone, []libdns.Record{txt("three")})
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, set, []libdns.Record{txt("three")})
	all, err := p.GetRecords(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, all, []libdns.Record{txt("three")})

	// Deleting something absent is not an error and deletes nothing.
	deleted, err := p.DeleteRecords(ctx, zone, []libdns.Record{txt("absent")})
	if err != nil || len(deleted) != 0 {
		t.Fatalf("deleting an absent record: %v, %v", deleted, err)
	}
	// Empty data and TTL match anything.
	deleted, err = p.DeleteRecords(ctx, zone, []libdns.Record{libdns.TXT{Name: "_acme-challenge.myhome"}})
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, deleted, []libdns.Record{txt("three")})
	// An address without IP (the zero Address) deletes by name and type.
	if _, err := p.AppendRecords(ctx, zone, []libdns.Record{libdns.Address{Name: "lan.myhome", IP: netip.MustParseAddr("192.168.1.2")}}); err != nil {
		t.Fatal(err)
	}
	deleted, err = p.DeleteRecords(ctx, zone, []libdns.Record{libdns.Address{Name: "lan.myhome"}})
	if err != nil || len(deleted) != 1 {
		t.Fatalf("deleting by name and type: %v, %v", deleted, err)
	}
	if all, err = p.GetRecords(ctx, zone); err != nil || len(all) != 0 {
		t.Fatalf("zone not empty: %v, %v", all, err)
	}
	// Empty inputs make no request.
	calls := f.calls.Load()
	if recs, err := p.AppendRecords(ctx, zone, nil); err != nil || recs != nil || f.calls.Load() != calls {
		t.Fatalf("empty append: %v, %v", recs, err)
	}
}

// TestRequestWire checks what goes over the wire against docs/api.md.
func TestRequestWire(t *testing.T) {
	f := newFixture(t)
	type seen struct {
		method, path, auth, ctype, query string
		body                             map[string]any
	}
	var (
		mu   sync.Mutex
		reqs []seen
	)
	f.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		s := seen{method: r.Method, path: r.URL.Path, auth: r.Header.Get("Authorization"),
			ctype: r.Header.Get("Content-Type"), query: r.URL.RawQuery}
		if r.Method != http.MethodGet {
			raw, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(raw, &s.body); err != nil {
				t.Errorf("body %q: %v", raw, err)
			}
		}
		mu.Lock()
		reqs = append(reqs, s)
		mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"records": []any{}})
		return true
	})
	p := f.provider()
	p.Endpoint += "/" // a trailing slash must not double up
	ctx := context.Background()
	if _, err := p.GetRecords(ctx, "box.example.org."); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AppendRecords(ctx, "box.example.org.", []libdns.Record{
		libdns.TXT{Name: "_acme-challenge.myhome", TTL: 90*time.Second + 500*time.Millisecond, Text: "v"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.DeleteRecords(ctx, "box.example.org.", []libdns.Record{libdns.RR{Name: "www.myhome"}}); err != nil {
		t.Fatal(err)
	}

	if len(reqs) != 3 {
		t.Fatalf("%d requests", len(reqs))
	}
	for _, r := range reqs {
		if r.auth != "Bearer "+f.token || r.path != "/v1/records" {
			t.Errorf("request %+v", r)
		}
	}
	if reqs[0].method != http.MethodGet || reqs[0].query != "zone=box.example.org." {
		t.Errorf("get: %+v", reqs[0])
	}
	wantAppend := map[string]any{"zone": "box.example.org.", "records": []any{
		map[string]any{"name": "_acme-challenge.myhome", "type": "TXT", "data": "v", "ttl": 90.0},
	}}
	if reqs[1].method != http.MethodPost || reqs[1].ctype != "application/json" || fmt.Sprint(reqs[1].body) != fmt.Sprint(wantAppend) {
		t.Errorf("append: %+v, want body %v", reqs[1], wantAppend)
	}
	wantDelete := map[string]any{"zone": "box.example.org.", "records": []any{map[string]any{"name": "www.myhome"}}}
	if reqs[2].method != http.MethodDelete || fmt.Sprint(reqs[2].body) != fmt.Sprint(wantDelete) {
		t.Errorf("delete: %+v, want body %v", reqs[2], wantDelete)
	}
}

// TestRefusedBeforeSending: what the API cannot take fails without a
// request, so no partial change is possible.
func TestRefusedBeforeSending(t *testing.T) {
	f := newFixture(t)
	p := f.provider()
	ctx := context.Background()
	tests := []struct {
		name string
		recs []libdns.Record
		want error
	}{
		{"mx", []libdns.Record{libdns.MX{Name: "myhome", Preference: 10, Target: "mx.example.org."}}, ErrUnsupportedType},
		{"opaque type", []libdns.Record{libdns.RR{Name: "myhome", Type: "LOC", Data: "x"}}, ErrUnsupportedType},
		{"ipv6 in an A record", []libdns.Record{libdns.RR{Name: "myhome", Type: "A", Data: "2001:db8::1"}}, ErrInvalidRecord},
		{"not an address", []libdns.Record{libdns.RR{Name: "myhome", Type: "AAAA", Data: "myhome"}}, ErrInvalidRecord},
		{"no name", []libdns.Record{libdns.TXT{Text: "x"}}, ErrInvalidRecord},
		{"empty txt", []libdns.Record{libdns.TXT{Name: "myhome"}}, ErrInvalidRecord},
		{"negative ttl", []libdns.Record{libdns.TXT{Name: "myhome", Text: "x", TTL: -time.Second}}, ErrInvalidRecord},
		{"one bad among good", []libdns.Record{libdns.TXT{Name: "a.myhome", Text: "x"}, libdns.NS{Name: "myhome", Target: "ns."}}, ErrUnsupportedType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.AppendRecords(ctx, "box.example.org.", tt.recs)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := p.GetRecords(ctx, ""); err == nil {
		t.Fatal("empty zone accepted")
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("%d requests made", n)
	}
}

func TestAPIErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	p := f.provider()

	_, err := p.AppendRecords(ctx, "box.example.org.", []libdns.Record{libdns.TXT{Name: "_acme-challenge.other", Text: "x"}})
	var ae *APIError
	if !errors.Is(err, ErrOutsideSubtree) || !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || ae.Code != "OutsideSubtree" {
		t.Fatalf("outside the subtree: %v", err)
	}
	if !strings.Contains(err.Error(), "_acme-challenge.other.box.example.org. is outside the gateway's subtree") {
		t.Fatalf("the server's reason is missing from %q", err)
	}
	if _, err := p.GetRecords(ctx, "example.net."); !errors.Is(err, ErrOutsideSubtree) {
		t.Fatalf("foreign zone: %v", err)
	}

	bad := f.provider()
	bad.Token = "gh_wrong"
	if _, err := bad.GetRecords(ctx, "box.example.org."); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}

	// A proxy's HTML error page still gives a readable error.
	f.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "<html>not here</html>")
		return true
	})
	_, err = p.GetRecords(ctx, "box.example.org.")
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || ae.Code != "" || !strings.Contains(err.Error(), "404 not found") {
		t.Fatalf("html error: %v", err)
	}

	// A 2xx answer that is not JSON.
	f.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		io.WriteString(w, "OK")
		return true
	})
	if _, err := p.GetRecords(ctx, "box.example.org."); err == nil || !strings.Contains(err.Error(), "decoding") {
		t.Fatalf("garbage answer: %v", err)
	}

	// A record type the provider does not know coming back.
	f.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		writeJSON(w, http.StatusOK, map[string]any{"records": []any{map[string]any{"name": "x", "type": "LOC", "data": "y"}}})
		return true
	})
	if _, err := p.GetRecords(ctx, "box.example.org."); !errors.Is(err, ErrUnsupportedType) {
		t.Fatalf("unknown type in answer: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	for _, p := range []*Provider{
		{Token: "t"},
		{Endpoint: "https://api.box.example.org"},
		{Endpoint: "api.box.example.org", Token: "t"},
		{Endpoint: "ftp://api.box.example.org", Token: "t"},
	} {
		if _, err := p.GetRecords(ctx, "box.example.org."); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", p, err)
		}
	}
}

// failing returns a fault that answers the first n requests with status
// (and Retry-After when set), then lets requests through.
func failing(n int, status int, retryAfter string) func(http.ResponseWriter, *http.Request) bool {
	var mu sync.Mutex
	return func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if n == 0 {
			return false
		}
		n--
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		writeError(w, status, "Unavailable", "try again")
		return true
	}
}

func TestRetries(t *testing.T) {
	txt := []libdns.Record{libdns.TXT{Name: "_acme-challenge.myhome", Text: "v", TTL: time.Minute}}
	tests := []struct {
		name      string
		fault     func(http.ResponseWriter, *http.Request) bool
		call      string // "get" or "append"
		wantCalls int64
		wantErr   error // nil: success
		minTime   time.Duration
		maxTime   time.Duration
	}{
		{"503 twice then ok", failing(2, 503, ""), "get", 3, nil, 300 * time.Millisecond, 3 * time.Second},
		{"503 on append is retried", failing(1, 503, ""), "append", 2, nil, 100 * time.Millisecond, 2 * time.Second},
		{"500 on append is retried", failing(1, 500, ""), "append", 2, nil, 100 * time.Millisecond, 2 * time.Second},
		{"429 honours retry-after", failing(1, 429, "1"), "append", 2, nil, 950 * time.Millisecond, 3 * time.Second},
		{"retry-after beyond the cap is not waited", failing(5, 429, "60"), "get", 1, ErrRateLimited, 0, time.Second},
		{"always 503 gives up", failing(100, 503, "0"), "get", maxAttempts, errAny, 0, 5 * time.Second},
		{"501 is not retried", failing(100, 501, ""), "get", 1, errAny, 0, time.Second},
		{"400 is not retried", failing(100, 400, ""), "append", 1, ErrInvalidRecord, 0, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.setFault(tt.fault)
			p := f.provider()
			start := time.Now()
			var err error
			if tt.call == "get" {
				_, err = p.GetRecords(context.Background(), "box.example.org.")
			} else {
				_, err = p.AppendRecords(context.Background(), "box.example.org.", txt)
			}
			elapsed := time.Since(start)
			if got := f.calls.Load(); got != tt.wantCalls {
				t.Errorf("%d requests, want %d", got, tt.wantCalls)
			}
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("error %v", err)
			case tt.wantErr != nil && err == nil:
				t.Error("no error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if elapsed < tt.minTime || elapsed > tt.maxTime {
				t.Errorf("took %v, want between %v and %v", elapsed, tt.minTime, tt.maxTime)
			}
		})
	}
}

func TestRetryAfterDate(t *testing.T) {
	f := newFixture(t)
	// HTTP dates have whole seconds: two seconds ahead is more than one.
	f.setFault(failing(1, 429, time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat)))
	start := time.Now()
	if _, err := f.provider().GetRecords(context.Background(), "box.example.org."); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond || elapsed > 4*time.Second || f.calls.Load() != 2 {
		t.Fatalf("%d requests in %v", f.calls.Load(), elapsed)
	}
}

// errAny stands for "some error" in test tables.
var errAny = errors.New("any error")

// TestTransportErrors: a request that got no answer is repeated only when
// repeating it cannot add anything twice.
func TestTransportErrors(t *testing.T) {
	f := newFixture(t)
	f.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return true
	})
	p := f.provider()
	if _, err := p.AppendRecords(context.Background(), "box.example.org.", []libdns.Record{libdns.TXT{Name: "myhome", Text: "x"}}); err == nil {
		t.Fatal("append over a dead connection succeeded")
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("append sent %d times, want once", n)
	}
	f.calls.Store(0)
	if _, err := p.GetRecords(context.Background(), "box.example.org."); err == nil {
		t.Fatal("get over a dead connection succeeded")
	}
	if n := f.calls.Load(); n != maxAttempts {
		t.Fatalf("get sent %d times, want %d", n, maxAttempts)
	}
}

func TestContext(t *testing.T) {
	f := newFixture(t)
	p := f.provider()

	// A server that does not answer: the context ends the call.
	release := make(chan struct{})
	f.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	_, err := p.GetRecords(ctx, "box.example.org.")
	cancel()
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("hanging server: %v after %v", err, time.Since(start))
	}

	// Waiting to retry ends with the context too.
	f.setFault(failing(100, 503, "2"))
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = p.GetRecords(ctx, "box.example.org.")
	var ae *APIError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ae) || time.Since(start) > time.Second {
		t.Fatalf("retry wait: %v after %v", err, time.Since(start))
	}

	// A context already done sends nothing.
	f.calls.Store(0)
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := p.GetRecords(ctx, "box.example.org."); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

// TestConcurrentUse: parallel appends all land and nothing races (-race).
func TestConcurrentUse(t *testing.T) {
	f := newFixture(t)
	p := f.provider()
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			rec := libdns.TXT{Name: "_acme-challenge.myhome", TTL: time.Minute, Text: fmt.Sprintf("value-%d", i)}
			if _, err := p.AppendRecords(context.Background(), "box.example.org.", []libdns.Record{rec}); err != nil {
				errs <- err
			}
			if _, err := p.GetRecords(context.Background(), "myhome.box.example.org."); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	recs, err := p.GetRecords(context.Background(), "box.example.org.")
	if err != nil || len(recs) != n {
		t.Fatalf("%d records, %v; want %d", len(recs), err, n)
	}
}
