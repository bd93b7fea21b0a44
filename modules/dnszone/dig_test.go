package dnszone

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// digResult is dig's full output, parsed.
type digResult struct {
	status   string
	flags    []string
	question string
	// sections by name: "ANSWER", "AUTHORITY", "ADDITIONAL"; records as
	// fmtRR renders them.
	sections map[string][]string
	// ednsUDP is the payload size in the reply's OPT record, 0 without.
	ednsUDP  int
	timedOut bool
	out      string
}

func (r digResult) has(flag string) bool { return slices.Contains(r.flags, flag) }

// digger runs the real dig against a server on addr.
type digger struct {
	bin, host, port string
}

func newDigger(t *testing.T, addr string) digger {
	bin := testtools.Binary(t, "dig", "bind9-dnsutils")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return digger{bin: bin, host: host, port: port}
}

func (d digger) run(t *testing.T, args ...string) digResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all := append([]string{"@" + d.host, "-p", d.port, "+time=1", "+tries=1", "+nocookie"}, args...)
	out, err := exec.CommandContext(ctx, d.bin, all...).CombinedOutput()
	r := parseDig(string(out))
	if err != nil {
		// dig exits 9 when no reply came.
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 9 {
			r.timedOut = true
			return r
		}
		t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return r
}

// short runs dig +short and returns its lines, sorted.
func (d digger) short(t *testing.T, args ...string) []string {
	t.Helper()
	r := d.run(t, append(args, "+short")...)
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) == 1 && lines[0] == "" {
		lines = nil
	}
	slices.Sort(lines)
	return lines
}

func parseDig(out string) digResult {
	r := digResult{sections: map[string][]string{}, out: out}
	section := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, ";; ->>HEADER<<-"):
			if _, after, ok := strings.Cut(line, "status: "); ok {
				r.status, _, _ = strings.Cut(after, ",")
			}
		case strings.HasPrefix(line, ";; flags:"):
			flags, _, _ := strings.Cut(strings.TrimPrefix(line, ";; flags:"), ";")
			r.flags = strings.Fields(flags)
		case strings.HasPrefix(line, "; EDNS:"):
			if _, after, ok := strings.Cut(line, "udp: "); ok {
				r.ednsUDP, _ = strconv.Atoi(strings.TrimSpace(after))
			}
		case strings.HasPrefix(line, ";; ") && strings.HasSuffix(line, " SECTION:"):
			section = strings.TrimSuffix(strings.TrimPrefix(line, ";; "), " SECTION:")
		case strings.TrimSpace(line) == "":
			section = ""
		case section == "QUESTION":
			r.question = strings.Join(strings.Fields(strings.TrimPrefix(line, ";")), " ")
		case section != "" && section != "OPT PSEUDOSECTION" && !strings.HasPrefix(line, ";"):
			f := strings.Fields(line)
			if len(f) > 3 && f[2] == "IN" {
				f = append(f[:2], f[3:]...)
			}
			r.sections[section] = append(r.sections[section], strings.Join(f, " "))
		}
	}
	return r
}

var transports = []string{"+notcp", "+tcp"}

// TestDig runs the real dig over UDP and TCP for each answering rule.
func TestDig(t *testing.T) {
	h := testHandler(t)
	_, addr := startServer(t, h, ServerOptions{})
	d := newDigger(t, addr)
	shortTests := []struct {
		name string
		args []string
		want []string
	}{
		{"tunnel A", []string{"tun.box.example.org", "A"}, []string{"203.0.113.10"}},
		{"tunnel AAAA", []string{"tun.box.example.org", "AAAA"}, []string{"2001:db8::10"}},
		{"dynamic A", []string{"dyn.box.example.org", "A"}, []string{"198.51.100.8"}},
		{"dynamic AAAA", []string{"dyn.box.example.org", "AAAA"}, []string{"2001:db8:1::8"}},
		{"local A", []string{"local.dyn.box.example.org", "A"}, []string{"192.168.1.11"}},
		{"local AAAA", []string{"local.dyn.box.example.org", "AAAA"}, []string{"fd00::11"}},
		{"challenge TXT", []string{"_acme-challenge.chal.box.example.org", "TXT"}, []string{`"challenge-one"`, `"challenge-two"`}},
		{"api", []string{"api.box.example.org", "A"}, []string{"203.0.113.10"}},
		{"apex NS", []string{"box.example.org", "NS"}, []string{"ns1.box.example.org.", "ns2.other.example.net."}},
		{"apex CAA", []string{"box.example.org", "CAA"}, []string{`0 issue "letsencrypt.org"`}},
		{"CNAME chain", []string{"www.chal.box.example.org", "A"}, []string{"203.0.113.10", "tun.box.example.org."}},
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			for _, tt := range shortTests {
				if got := d.short(t, append(tt.args, tr)...); !slices.Equal(got, tt.want) {
					t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
				}
			}

			r := d.run(t, tr, "nobody.box.example.org", "A")
			if r.status != "NXDOMAIN" || !r.has("aa") || r.has("ra") || len(r.sections["ANSWER"]) > 0 ||
				len(r.sections["AUTHORITY"]) != 1 || !strings.Contains(r.sections["AUTHORITY"][0], "box.example.org. 60 SOA ns1.box.example.org. hostmaster.example.org.") {
				t.Errorf("NXDOMAIN: %+v", r)
			}
			r = d.run(t, tr, "gone.box.example.org", "A")
			if r.status != "NXDOMAIN" {
				t.Errorf("expired: %s", r.status)
			}
			r = d.run(t, tr, "tun.box.example.org", "MX")
			if r.status != "NOERROR" || !r.has("aa") || len(r.sections["ANSWER"]) > 0 || len(r.sections["AUTHORITY"]) != 1 ||
				!strings.Contains(r.sections["AUTHORITY"][0], " SOA ") {
				t.Errorf("NODATA: %+v", r)
			}
			r = d.run(t, tr, "b.chal.box.example.org", "TXT")
			if r.status != "NOERROR" || len(r.sections["AUTHORITY"]) != 1 {
				t.Errorf("empty non-terminal: %+v", r)
			}
			r = d.run(t, tr, "example.com", "A")
			if r.status != "REFUSED" || r.has("aa") {
				t.Errorf("outside the zone: %+v", r)
			}
			r = d.run(t, tr, "TuN.BoX.eXaMpLe.OrG", "A")
			if r.question != "TuN.BoX.eXaMpLe.OrG. IN A" || !slices.Equal(r.sections["ANSWER"], []string{"TuN.BoX.eXaMpLe.OrG. 60 A 203.0.113.10"}) {
				t.Errorf("0x20: question %q answer %q", r.question, r.sections["ANSWER"])
			}
			r = d.run(t, tr, "+bufsize=4096", "tun.box.example.org", "A")
			if r.ednsUDP != 1232 {
				t.Errorf("advertised EDNS size %d, want 1232\n%s", r.ednsUDP, r.out)
			}
			r = d.run(t, tr, "+edns=1", "+noednsnegotiation", "tun.box.example.org", "A")
			if r.status != "BADVERS" {
				t.Errorf("EDNS version 1: %s", r.status)
			}
			r = d.run(t, tr, "box.example.org", "AXFR")
			if !strings.Contains(r.out, "Transfer failed") {
				t.Errorf("AXFR not refused:\n%s", r.out)
			}
			r = d.run(t, tr, "tun.box.example.org", "ANY")
			if r.status != "NOERROR" || !slices.Equal(r.sections["ANSWER"], []string{`tun.box.example.org. 60 HINFO "RFC8482" ""`}) {
				t.Errorf("ANY: %+v", r)
			}
			r = d.run(t, tr, "+opcode=notify", "box.example.org", "SOA")
			if r.status != "NOTIMP" {
				t.Errorf("NOTIFY: %s", r.status)
			}
			r = d.run(t, tr, "box.example.org", "NS")
			if !slices.Equal(r.sections["ADDITIONAL"], []string{"ns1.box.example.org. 3600 A 203.0.113.53", "ns1.box.example.org. 3600 AAAA 2001:db8::53"}) {
				t.Errorf("glue: %q", r.sections["ADDITIONAL"])
			}
		})
	}

	t.Run("truncation", func(t *testing.T) {
		r := d.run(t, "+notcp", "+ignore", "many.big.box.example.org", "TXT")
		if !r.has("tc") || len(r.sections["ANSWER"]) >= 40 {
			t.Errorf("UDP: flags %v, %d records", r.flags, len(r.sections["ANSWER"]))
		}
		// Without +ignore dig retries over TCP on its own.
		r = d.run(t, "+notcp", "many.big.box.example.org", "TXT")
		if !strings.Contains(r.out, "Truncated, retrying in TCP mode") || len(r.sections["ANSWER"]) != 40 {
			t.Errorf("retry: %d records\n%s", len(r.sections["ANSWER"]), r.out)
		}
		r = d.run(t, "+tcp", "many.big.box.example.org", "TXT")
		if r.has("tc") || len(r.sections["ANSWER"]) != 40 {
			t.Errorf("TCP: flags %v, %d records", r.flags, len(r.sections["ANSWER"]))
		}
	})
}

func TestDigTransferAllowed(t *testing.T) {
	h := testHandler(t, func(c *Config) { c.TransferAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} })
	_, addr := startServer(t, h, ServerOptions{})
	d := newDigger(t, addr)
	r := d.run(t, "box.example.org", "AXFR")
	if strings.Contains(r.out, "Transfer failed") || !strings.Contains(r.out, "local.tun.box.example.org.") ||
		strings.Count(r.out, "\tSOA\t") != 2 {
		t.Errorf("AXFR:\n%s", r.out)
	}
}

func TestDigRateLimit(t *testing.T) {
	t.Run("slip", func(t *testing.T) {
		h := testHandler(t, func(c *Config) { c.RRL = RRL{ResponsesPerSecond: 1, Window: 2 * time.Second, Slip: 1} })
		_, addr := startServer(t, h, ServerOptions{})
		d := newDigger(t, addr)
		const flood = 12
		var full, truncated int
		for range flood {
			r := d.run(t, "+notcp", "+ignore", "tun.box.example.org", "A")
			switch {
			case r.has("tc") && len(r.sections["ANSWER"]) == 0:
				truncated++
			case len(r.sections["ANSWER"]) == 1:
				full++
			}
		}
		if full < 2 || truncated < flood/2 {
			t.Errorf("%d full, %d truncated of %d", full, truncated, flood)
		}
		// A real client, told to retry over TCP, still gets its answer.
		if got := d.short(t, "+notcp", "tun.box.example.org", "A"); !slices.Equal(got, []string{"203.0.113.10"}) {
			t.Errorf("limited client over TCP: %q", got)
		}
	})
	t.Run("drop", func(t *testing.T) {
		h := testHandler(t, func(c *Config) { c.RRL = RRL{ResponsesPerSecond: 0.2, Window: time.Second, Slip: -1} })
		_, addr := startServer(t, h, ServerOptions{})
		d := newDigger(t, addr)
		var answered, silent int
		for range 3 {
			if r := d.run(t, "+notcp", "tun.box.example.org", "A"); r.timedOut {
				silent++
			} else {
				answered++
			}
		}
		// One response every five seconds: the first query only.
		if answered != 1 || silent != 2 || h.Stats().RateLimited != 2 {
			t.Errorf("answered %d, silent %d, stats %+v", answered, silent, h.Stats())
		}
	})
}

// What the registry accepts at one name, DNS serves whole: the most TXT
// values of 1 KiB the records API lets one owner hold come back in one
// answer over TCP (64 of them once came back as an empty answer). A
// wildcard owner is refused by the registry rather than synthesised
// (RFC 4592); one stored before that rule is served only to a literal
// "*", never to the names it would cover.
func TestDigLargestOwnerAndNoWildcard(t *testing.T) {
	h := testHandler(t)
	s := registry.GatewaySubtree("fat")
	var recs []registry.Record
	for i := 0; ; i++ {
		r := registry.Record{Subtree: s, Owner: "big", Type: "TXT", Value: fmt.Sprintf("%04d%s", i, strings.Repeat("v", 1020)), TTL: time.Minute}
		if registry.CheckRecordSet(append(recs, r)) != nil {
			break
		}
		recs = append(recs, r)
	}
	if len(recs) < 8 {
		t.Fatalf("the registry accepts only %d TXT values of 1 KiB at one name", len(recs))
	}
	recs = append(recs, registry.Record{Subtree: s, Owner: "*.wild", Type: "TXT", Value: "legacy", TTL: time.Minute})
	h.Index().Put(&registry.Gateway{Name: "fat", Mode: registry.ModeTunnel}, recs)
	_, addr := startServer(t, h, ServerOptions{})
	d := newDigger(t, addr)

	r := d.run(t, "+tcp", "TXT", "big.fat.box.example.org.")
	if r.status != "NOERROR" || len(r.sections["ANSWER"]) != len(recs)-1 {
		t.Fatalf("dig +tcp TXT big.fat: %s with %d records, want all %d\n%s", r.status, len(r.sections["ANSWER"]), len(recs)-1, r.out)
	}
	// Over UDP the same answer is truncated, as it should be, not empty.
	if r := d.run(t, "+notcp", "+ignore", "+bufsize=1232", "TXT", "big.fat.box.example.org."); !r.has("tc") {
		t.Errorf("dig TXT big.fat over UDP: not truncated\n%s", r.out)
	}
	if r := d.run(t, "TXT", "anything.wild.fat.box.example.org."); r.status != "NXDOMAIN" {
		t.Errorf("a wildcard was synthesised: %s\n%s", r.status, r.out)
	}
}
