package dnszone

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// memSteering is a Steering held in memory, as the node's cluster view
// is: holders by gateway, the live nodes, and a version bumped after each
// change. It counts the calls of NameServers, so tests can see when the
// handler rebuilds its static names.
type memSteering struct {
	mu      sync.Mutex
	holders map[string][]netip.Addr
	live    []netip.Addr
	ns      []Nameserver
	version atomic.Uint64
	nsCalls atomic.Int64
}

func newMemSteering(live []netip.Addr, ns []Nameserver) *memSteering {
	return &memSteering{holders: map[string][]netip.Addr{}, live: live, ns: ns}
}

func (s *memSteering) TunnelAddrs(gateway string) []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.holders[gateway]; ok {
		return slices.Clone(a)
	}
	return slices.Clone(s.live)
}

func (s *memSteering) NameServers() []Nameserver {
	s.nsCalls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ns)
}

func (s *memSteering) Version() uint64 { return s.version.Load() }

// change applies fn under the lock, then bumps the version, in the order
// the Steering contract asks for.
func (s *memSteering) change(fn func(s *memSteering)) {
	s.mu.Lock()
	fn(s)
	s.mu.Unlock()
	s.version.Add(1)
}

// twoNodes is a cluster of two live nodes, a (holding tun) and b.
func twoNodes() *memSteering {
	s := newMemSteering(addrs("192.0.2.1", "2001:db8:a::1", "192.0.2.2"), []Nameserver{
		{Name: "b.nodes.box.example.org", Addrs: addrs("192.0.2.2")},
		{Name: "a.nodes.box.example.org.", Addrs: addrs("192.0.2.1", "2001:db8:a::1")},
		{Name: "ns.elsewhere.example.net"},
	})
	s.holders["tun"] = addrs("192.0.2.1", "2001:db8:a::1")
	return s
}

func TestSteeringAnswers(t *testing.T) {
	steered := []string{"%s 30 A 192.0.2.1", "%s 30 A 192.0.2.2"}
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		answer []string
		extra  []string
	}{
		{"held tunnel A: the holder", "tun.box.example.org.", dns.TypeA, []string{"%s 30 A 192.0.2.1"}, nil},
		{"held tunnel asked in mixed case", "TuN.Box.example.org.", dns.TypeA, []string{"%s 30 A 192.0.2.1"}, nil},
		{"held tunnel AAAA: the holder", "tun.box.example.org.", dns.TypeAAAA, []string{"%s 30 AAAA 2001:db8:a::1"}, nil},
		{"unheld tunnel: every live node", "chal.box.example.org.", dns.TypeA, steered, nil},
		{"CNAME to a held tunnel", "www.chal.box.example.org.", dns.TypeA,
			[]string{"%s 60 CNAME tun.box.example.org.", "tun.box.example.org. 30 A 192.0.2.1"}, nil},
		{"api: every live node", "api.box.example.org.", dns.TypeA, steered, nil},
		{"api AAAA", "api.box.example.org.", dns.TypeAAAA, []string{"%s 30 AAAA 2001:db8:a::1"}, nil},
		{"apex NS: the live nodes, glue", "box.example.org.", dns.TypeNS,
			[]string{"%s 30 NS a.nodes.box.example.org.", "%s 30 NS b.nodes.box.example.org.", "%s 30 NS ns.elsewhere.example.net."},
			[]string{"a.nodes.box.example.org. 30 A 192.0.2.1", "a.nodes.box.example.org. 30 AAAA 2001:db8:a::1",
				"b.nodes.box.example.org. 30 A 192.0.2.2"}},
		{"steered nameserver A", "b.nodes.box.example.org.", dns.TypeA, []string{"%s 30 A 192.0.2.2"}, nil},
		// Unchanged by steering.
		{"configured nameserver still resolves", "ns1.box.example.org.", dns.TypeA, []string{"%s 3600 A 203.0.113.53"}, nil},
		{"SOA keeps its MNAME", "box.example.org.", dns.TypeSOA,
			[]string{"%s 3600 SOA ns1.box.example.org. hostmaster.example.org. SERIAL 7200 3600 1209600 60"}, nil},
		{"dynamic", "dyn.box.example.org.", dns.TypeA, []string{"%s 60 A 198.51.100.8"}, nil},
		{"local of a tunnel", "local.tun.box.example.org.", dns.TypeA, []string{"%s 60 A 192.168.1.10"}, nil},
		{"host", "www.box.example.org.", dns.TypeA, []string{"%s 3600 A 203.0.113.80"}, nil},
		{"apex A", "box.example.org.", dns.TypeA, []string{"%s 3600 A 203.0.113.1"}, nil},
	}
	h := testHandler(t)
	h.SetSteering(twoNodes())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, proto := range []string{"udp", "tcp"} {
				req := query(tt.qname, tt.qtype)
				check(t, h, req, h.Answer(req, netip.Addr{}, proto), dns.RcodeSuccess, true, false, tt.answer, nil, tt.extra)
			}
		})
	}
	t.Run("empty node label is an empty non-terminal", func(t *testing.T) {
		req := query("nodes.box.example.org.", dns.TypeA)
		check(t, h, req, h.Answer(req, netip.Addr{}, "udp"), dns.RcodeSuccess, true, false, nil, []string{negSOA}, nil)
	})
}

func TestSteeringFallsBackToConfig(t *testing.T) {
	configured := func(h *Handler) {
		t.Helper()
		for _, q := range []struct {
			qname  string
			qtype  uint16
			answer []string
		}{
			{"tun.box.example.org.", dns.TypeA, []string{"%s 60 A 203.0.113.10"}},
			{"api.box.example.org.", dns.TypeA, []string{"%s 3600 A 203.0.113.10"}},
			{"box.example.org.", dns.TypeNS, []string{"%s 3600 NS ns1.box.example.org.", "%s 3600 NS ns2.other.example.net."}},
		} {
			req := query(q.qname, q.qtype)
			got := h.Answer(req, netip.Addr{}, "udp")
			if a := fmtRRs(got.Answer); len(a) != len(q.answer) || a[0] != strings.ReplaceAll(q.answer[0], "%s", q.qname) {
				t.Errorf("%s %s: %q, want %q", q.qname, dns.TypeToString[q.qtype], a, q.answer)
			}
		}
	}
	t.Run("empty steering", func(t *testing.T) {
		h := testHandler(t)
		h.SetSteering(newMemSteering(nil, nil))
		configured(h)
	})
	t.Run("only unusable nameservers and addresses", func(t *testing.T) {
		h := testHandler(t)
		h.SetSteering(newMemSteering([]netip.Addr{{}}, []Nameserver{
			{Name: "glueless.box.example.org"},
			{Name: "api.box.example.org", Addrs: addrs("192.0.2.9")},
			{Name: "www.box.example.org", Addrs: addrs("192.0.2.9")},
			{Name: "box.example.org", Addrs: addrs("192.0.2.9")},
			{Name: "a..b", Addrs: addrs("192.0.2.9")},
			{Name: `x\.y.box.example.org`, Addrs: addrs("192.0.2.9")},
		}))
		configured(h)
		req := query("glueless.box.example.org.", dns.TypeA)
		if got := h.Answer(req, netip.Addr{}, "udp"); got.Rcode != dns.RcodeNameError {
			t.Errorf("a left-out nameserver answers %s", dns.RcodeToString[got.Rcode])
		}
	})
	t.Run("removed", func(t *testing.T) {
		h := testHandler(t)
		h.SetSteering(twoNodes())
		h.SetSteering(nil)
		configured(h)
	})
	t.Run("explicit api addresses are not steered", func(t *testing.T) {
		h := testHandler(t, func(c *Config) { c.APIAddrs = addrs("203.0.113.99") })
		h.SetSteering(twoNodes())
		req := query("api.box.example.org.", dns.TypeA)
		check(t, h, req, h.Answer(req, netip.Addr{}, "udp"), dns.RcodeSuccess, true, false,
			[]string{"%s 3600 A 203.0.113.99"}, nil, nil)
	})
	t.Run("one family only", func(t *testing.T) {
		h := testHandler(t)
		s := twoNodes()
		s.holders["tun"] = addrs("192.0.2.1")
		h.SetSteering(s)
		// The holder has no IPv6 address: no AAAA, rather than the
		// configured address of a node that does not hold the tunnel.
		req := query("tun.box.example.org.", dns.TypeAAAA)
		check(t, h, req, h.Answer(req, netip.Addr{}, "udp"), dns.RcodeSuccess, true, false, nil, []string{negSOA}, nil)
	})
	t.Run("duplicate addresses answered once", func(t *testing.T) {
		h := testHandler(t)
		s := twoNodes()
		s.holders["tun"] = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.1"), {}}
		h.SetSteering(s)
		req := query("tun.box.example.org.", dns.TypeA)
		check(t, h, req, h.Answer(req, netip.Addr{}, "udp"), dns.RcodeSuccess, true, false, []string{"%s 30 A 192.0.2.1"}, nil, nil)
	})
}

// TestSteeringVersion: tunnel names follow the Steering on every query;
// the static names it steers are rebuilt once per version, not per query.
func TestSteeringVersion(t *testing.T) {
	h := testHandler(t)
	s := twoNodes()
	h.SetSteering(s)
	ns := func() []string {
		return fmtRRs(h.Answer(query(testZone, dns.TypeNS), netip.Addr{}, "udp").Answer)
	}
	tunA := func() []string {
		return fmtRRs(h.Answer(query("tun.box.example.org.", dns.TypeA), netip.Addr{}, "udp").Answer)
	}
	before := ns()
	calls := s.nsCalls.Load()
	for range 100 {
		ns()
		tunA()
	}
	if n := s.nsCalls.Load(); n != calls {
		t.Errorf("NameServers called %d times in 200 queries of one version", n-calls)
	}
	s.change(func(s *memSteering) {
		s.holders["tun"] = addrs("192.0.2.2")
		s.ns = s.ns[1:]
	})
	if got, want := tunA(), []string{"tun.box.example.org. 30 A 192.0.2.2"}; !slices.Equal(got, want) {
		t.Errorf("after the bump tun A is %q, want %q", got, want)
	}
	after := ns()
	if len(after) != len(before)-1 || slices.Contains(after, "box.example.org. 30 NS b.nodes.box.example.org.") {
		t.Errorf("after the bump NS is %q (before %q)", after, before)
	}
	if n := s.nsCalls.Load(); n != calls+1 {
		t.Errorf("NameServers called %d times after one bump, want 1", n-calls)
	}
}

// TestSteeringConcurrent changes the steering, and swaps it, while queries
// run; -race checks the handoff.
func TestSteeringConcurrent(t *testing.T) {
	h := testHandler(t)
	s := twoNodes()
	h.SetSteering(s)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				for _, q := range []string{"tun.box.example.org.", "api.box.example.org.", testZone} {
					qt := dns.TypeA
					if q == testZone {
						qt = dns.TypeNS
					}
					if got := h.Answer(query(q, qt), netip.Addr{}, "udp"); got.Rcode != dns.RcodeSuccess || len(got.Answer) == 0 {
						t.Errorf("%s: %s, %d records", q, dns.RcodeToString[got.Rcode], len(got.Answer))
						return
					}
				}
			}
		})
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for i := 0; i < 2000 && time.Now().Before(deadline); i++ {
		s.change(func(s *memSteering) {
			s.holders["tun"] = addrs("192.0.2." + string(rune('1'+i%2)))
			s.ns = []Nameserver{{Name: "n" + string(rune('a'+i%3)) + ".box.example.org", Addrs: addrs("192.0.2.1")}}
		})
		if i%50 == 0 {
			h.SetSteering(nil)
			h.SetSteering(s)
		}
	}
	stop.Store(true)
	wg.Wait()
}

// TestDigSteering asks the real dig: the first query after a version bump
// gets the new holder and the new nameservers; zone transfers keep the
// configuration.
func TestDigSteering(t *testing.T) {
	h := testHandler(t, func(c *Config) { c.TransferAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} })
	s := twoNodes()
	h.SetSteering(s)
	_, addr := startServer(t, h, ServerOptions{})
	d := newDigger(t, addr)
	for _, tr := range transports {
		r := d.run(t, tr, "tun.box.example.org", "A")
		if got, want := r.sections["ANSWER"], []string{"tun.box.example.org. 30 A 192.0.2.1"}; !slices.Equal(got, want) {
			t.Errorf("%s before: %q, want %q\n%s", tr, got, want, r.out)
		}
	}
	if got, want := d.short(t, "box.example.org", "NS"), []string{"a.nodes.box.example.org.", "b.nodes.box.example.org.", "ns.elsewhere.example.net."}; !slices.Equal(got, want) {
		t.Errorf("NS before: %q, want %q", got, want)
	}

	// Node a dies: b holds the tunnel and is the only node.
	s.change(func(s *memSteering) {
		s.holders["tun"] = addrs("192.0.2.2")
		s.live = addrs("192.0.2.2")
		s.ns = []Nameserver{{Name: "b.nodes.box.example.org", Addrs: addrs("192.0.2.2")}}
	})
	for _, tr := range transports {
		if got, want := d.short(t, tr, "tun.box.example.org", "A"), []string{"192.0.2.2"}; !slices.Equal(got, want) {
			t.Errorf("%s after: %q, want %q", tr, got, want)
		}
		if got, want := d.short(t, tr, "tun.box.example.org", "AAAA"), []string(nil); !slices.Equal(got, want) {
			t.Errorf("%s AAAA after: %q, want none", tr, got)
		}
	}
	if got, want := d.short(t, "api.box.example.org", "A"), []string{"192.0.2.2"}; !slices.Equal(got, want) {
		t.Errorf("api after: %q, want %q", got, want)
	}
	r := d.run(t, "box.example.org", "NS")
	if got, want := r.sections["ADDITIONAL"], []string{"b.nodes.box.example.org. 30 A 192.0.2.2"}; !slices.Equal(got, want) ||
		!slices.Equal(r.sections["ANSWER"], []string{"box.example.org. 30 NS b.nodes.box.example.org."}) {
		t.Errorf("NS after:\n%s", r.out)
	}

	r = d.run(t, "box.example.org", "AXFR")
	if !strings.Contains(r.out, "tun.box.example.org.\t60\tIN\tA\t203.0.113.10") || strings.Contains(r.out, "192.0.2.") {
		t.Errorf("AXFR is not the configured zone:\n%s", r.out)
	}
}
