package dnszone

import (
	"bytes"
	"net/netip"
	"reflect"
	"testing"

	"github.com/miekg/dns"
)

// FuzzFastQuery holds the fast unpacker to miekg/dns: whatever it takes
// must unpack with dns.Msg.Unpack into the same message, and be answered
// with the same bytes over UDP and TCP.
func FuzzFastQuery(f *testing.F) {
	fuzzSeeds(f)
	for _, edit := range []func(*dns.Msg){
		func(m *dns.Msg) { m.RecursionDesired = false; m.CheckingDisabled = true },
		func(m *dns.Msg) { m.SetEdns0(512, false); m.IsEdns0().SetExtendedRcode(dns.RcodeBadVers) },
		func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS },
		func(m *dns.Msg) { m.Question[0].Name = "." },
		func(m *dns.Msg) { m.Question[0].Name = "a_b-c.x9.box.example.org." },
	} {
		m := query("tun.box.example.org.", dns.TypeA)
		edit(m)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	h := testHandler(f)
	client := netip.MustParseAddr("192.0.2.1")
	var fq fastQuery
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := fq.unpack(b)
		if !ok {
			return
		}
		want := new(dns.Msg)
		if err := want.Unpack(b); err != nil {
			t.Fatalf("fast path took what miekg/dns refuses (%v): %x", err, b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast path unpacked\n%#v\nmiekg/dns\n%#v", got, want)
		}
		for _, proto := range []string{"udp", "tcp"} {
			gb, gerr := h.Answer(got, client, proto).Pack()
			wb, werr := h.Answer(want, client, proto).Pack()
			if (gerr == nil) != (werr == nil) || !bytes.Equal(gb, wb) {
				t.Fatalf("%s answers differ: %x (%v) and %x (%v)", proto, gb, gerr, wb, werr)
			}
		}
	})
}

// TestFastQueryTakesCommonQueries checks that the fast path does take the
// queries it exists for, so that the fuzz target compares something.
func TestFastQueryTakesCommonQueries(t *testing.T) {
	var fq fastQuery
	for _, m := range []*dns.Msg{
		query("tun.box.example.org.", dns.TypeA),
		query("_acme-challenge.chal.box.example.org.", dns.TypeTXT),
		func() *dns.Msg { m := query("Dyn.Box.Example.Org.", dns.TypeAAAA); m.SetEdns0(1232, true); return m }(),
	} {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		got, ok := fq.unpack(b)
		if !ok {
			t.Errorf("%v not taken", m.Question[0])
			continue
		}
		if got.Question[0] != m.Question[0] || got.Id != m.Id || (m.IsEdns0() == nil) != (got.IsEdns0() == nil) {
			t.Errorf("%v unpacked as %v", m, got)
		}
	}
	for _, b := range [][]byte{
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'a', '.', 'b', 0, 0, 1, 0, 1}, // a dot inside a label
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1},            // a pointer
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1, 0},        // a trailing byte
		{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1},        // a response
		{0, 1, 0x28, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1},        // UPDATE
		{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1},           // two questions claimed
	} {
		if _, ok := fq.unpack(b); ok {
			t.Errorf("%x taken", b)
		}
	}
}
