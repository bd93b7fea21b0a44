package regapi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
)

// The records API refuses, with a 400 and a reason, every record DNS would
// not serve, instead of storing it and answering something else (issue 14,
// finding 5). Each case is the attack as it was made against main.
func TestAttackRecordsDNSCannotServe(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		e := newEnv(t, driver, options{})
		token := e.subscribe("rec")
		z := zone + "."
		send := func(method string, recs ...map[string]any) reply {
			return e.do(method, "/v1/records", map[string]any{"zone": z, "records": recs}, token)
		}
		rr := func(name, typ, data string) map[string]any {
			return map[string]any{"name": name, "type": typ, "data": data, "ttl": 60}
		}
		refused := func(what string, r reply, name string) {
			t.Helper()
			if r.status != 400 || r.str("error") != name || r.str("reason") == "" {
				t.Errorf("%s: got %d %s, want 400 %s with a reason", what, r.status, r.body, name)
			}
		}
		ok := func(what string, r reply) {
			t.Helper()
			if r.status != 200 {
				t.Fatalf("%s: %d %s", what, r.status, r.body)
			}
		}

		// CNAME exclusivity across requests, both ways round, and by a
		// set that replaces one RRset beside another.
		ok("TXT at a", send("POST", rr("a.rec", "TXT", "x")))
		refused("CNAME beside a stored TXT", send("POST", rr("a.rec", "CNAME", "target.example.")), "Conflict")
		refused("CNAME set beside a stored TXT", send("PUT", rr("a.rec", "CNAME", "target.example.")), "Conflict")
		ok("CNAME at b", send("POST", rr("b.rec", "CNAME", "target.example.")))
		refused("TXT beside a stored CNAME", send("POST", rr("b.rec", "TXT", "x")), "Conflict")
		refused("A beside a stored CNAME", send("PUT", rr("b.rec", "A", "192.0.2.1")), "Conflict")
		ok("a second CNAME value replaces the first", send("PUT", rr("b.rec", "CNAME", "other.example.")))

		// Wildcards are not synthesised by the zone, so they are refused
		// rather than stored and served only to a literal "*".
		refused("wildcard TXT", send("POST", rr("*.rec", "TXT", "x")), "BadRequest")
		refused("wildcard A below", send("POST", rr("*.svc.rec", "A", "192.0.2.1")), "BadRequest")

		// local.NAME answers the reported LAN addresses, NAME its mode's:
		// records there were dropped by DNS yet counted toward the limit.
		refused("A at local", send("POST", rr("local.rec", "A", "192.0.2.1")), "BadRequest")
		refused("AAAA at local", send("POST", rr("local.rec", "AAAA", "2001:db8::1")), "BadRequest")
		refused("CNAME at local", send("POST", rr("local.rec", "CNAME", "target.example.")), "BadRequest")
		refused("IPv4-mapped AAAA", send("POST", rr("v6.rec", "AAAA", "::ffff:192.0.2.1")), "BadRequest")

		// Thousands of bytes of TXT at one name: past the cap the answer
		// would not fit a DNS message; the API stops well before.
		big := strings.Repeat("v", 1024)
		stored := 0
		for i := range 64 {
			r := send("POST", rr("big.rec", "TXT", fmt.Sprintf("%02d%s", i, big[2:])))
			if r.status != 200 {
				refused("TXT past the size of an answer", r, "RecordsTooLarge")
				break
			}
			stored++
		}
		if stored == 0 || stored >= 64 {
			t.Errorf("%d TXT values of 1 KiB stored at one name", stored)
		}
		// One request alone is held to the same bound.
		many := make([]map[string]any, 20)
		for i := range many {
			many[i] = rr("huge.rec", "TXT", fmt.Sprintf("%02d%s", i, big[2:]))
		}
		refused("20 TXT of 1 KiB in one request", send("POST", many...), "RecordsTooLarge")

		// Nothing refused was stored.
		got := recordKeys(t, e.do("GET", "/v1/records", nil, token))
		want := []string{"a.rec TXT x 60", "b.rec CNAME other.example. 60"}
		if len(got) != len(want)+stored {
			t.Errorf("stored %d records, want %d: %q", len(got), len(want)+stored, got)
		}
		for _, k := range got {
			if !strings.HasPrefix(k, "big.rec TXT ") && k != want[0] && k != want[1] {
				t.Errorf("a refused record was stored: %q", k)
			}
		}
	})
}
