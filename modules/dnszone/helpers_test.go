package dnszone

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/miekg/dns"
)

const testZone = "box.example.org."

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// testConfig is the zone every test answers for.
func testConfig() Config {
	return Config{
		Zone: "Box.Example.org",
		SOA:  SOA{RName: "hostmaster@example.org"},
		Nameservers: []Nameserver{
			{Name: "ns1.box.example.org", Addrs: addrs("203.0.113.53", "2001:db8::53")},
			{Name: "ns2.other.example.net"},
		},
		ApexAddrs:   addrs("203.0.113.1"),
		CAA:         []CAA{{Tag: "issue", Value: "letsencrypt.org"}},
		MX:          []MX{{Preference: 10, Host: "mail.example.net"}},
		TXT:         []string{"v=spf1 -all"},
		Hosts:       []Host{{Name: "www", Addrs: addrs("203.0.113.80")}, {Name: "status.eu", Addrs: addrs("203.0.113.81")}},
		TunnelAddrs: addrs("203.0.113.10", "2001:db8::10"),
		RRL:         RRL{Disabled: true},
	}
}

func rec(owner, typ, value string, ttl time.Duration) registry.Record {
	return registry.Record{Owner: owner, Type: typ, Value: value, TTL: ttl}
}

// testIndex holds one gateway per rule.
func testIndex(t testing.TB) *Index {
	t.Helper()
	x := NewIndex()
	x.Put(&registry.Gateway{Name: "tun", Mode: registry.ModeTunnel,
		PublicV4: netip.MustParseAddr("198.51.100.7"), LocalAddrs: addrs("192.168.1.10")}, nil)
	x.Put(&registry.Gateway{Name: "dyn", Mode: registry.ModeDynamic,
		PublicV4: netip.MustParseAddr("198.51.100.8"), PublicV6: netip.MustParseAddr("2001:db8:1::8"),
		LocalAddrs: addrs("192.168.1.11", "fd00::11")}, nil)
	x.Put(&registry.Gateway{Name: "nolocal", Mode: registry.ModeDynamic,
		PublicV4: netip.MustParseAddr("198.51.100.9")}, nil)
	x.Put(&registry.Gateway{Name: "chal", Mode: registry.ModeTunnel}, []registry.Record{
		rec("_acme-challenge", "TXT", "challenge-one", 300*time.Second),
		rec("_acme-challenge", "TXT", "challenge-two", 0),
		rec("_acme-challenge.www", "TXT", "challenge-www", 0),
		rec("www", "CNAME", "tun.box.example.org", 0),
		rec("ext", "CNAME", "example.net.", 120*time.Second),
		rec("deep.a.b", "TXT", "deep", 0),
		rec("", "TXT", "hello", 0),
		rec("loop1", "CNAME", "loop2.chal.box.example.org", 0),
		rec("loop2", "CNAME", "loop1.chal.box.example.org", 0),
		rec("dangling", "CNAME", "nothere.box.example.org", 0),
		rec("svc", "A", "10.0.0.1", 0),
		rec("svc", "AAAA", "fd00::1", 0),
		// Skipped: they would contradict NAME's own addresses.
		rec("", "A", "10.9.9.9", 0),
		rec("local", "CNAME", "example.net", 0),
	})
	x.Put(&registry.Gateway{Name: "gone", Mode: registry.ModeTunnel, Expired: true}, nil)
	var many []registry.Record
	for i := range 40 {
		many = append(many, rec("many", "TXT", fmt.Sprintf("%03d-%s", i, strings.Repeat("x", 96)), 0))
	}
	x.Put(&registry.Gateway{Name: "big", Mode: registry.ModeTunnel}, many)
	return x
}

func testHandler(t testing.TB, mutate ...func(*Config)) *Handler {
	t.Helper()
	c := testConfig()
	for _, m := range mutate {
		m(&c)
	}
	h, err := NewHandler(c, testIndex(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fmtRR renders rr as "name ttl TYPE rdata", without the class and with
// single spaces, for comparisons.
func fmtRR(rr dns.RR) string {
	f := strings.Fields(rr.String())
	if len(f) > 3 && f[2] == "IN" {
		f = append(f[:2], f[3:]...)
	}
	return strings.Join(f, " ")
}

func fmtRRs(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, fmtRR(rr))
	}
	return out
}

func query(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	return m
}
