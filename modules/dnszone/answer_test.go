package dnszone

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

const negSOA = "box.example.org. 60 SOA ns1.box.example.org. hostmaster.example.org. SERIAL 7200 3600 1209600 60"

func TestAnswerTable(t *testing.T) {
	h := testHandler(t)
	client := netip.MustParseAddr("192.0.2.1")
	tunnelA := []string{"%s 60 A 203.0.113.10"}
	type want struct {
		rcode  int
		aa, tc bool
		answer []string // "%s" stands for the question name as asked
		ns     []string
		extra  []string
	}
	nxdomain := want{rcode: dns.RcodeNameError, aa: true, ns: []string{negSOA}}
	nodata := want{rcode: dns.RcodeSuccess, aa: true, ns: []string{negSOA}}
	refused := want{rcode: dns.RcodeRefused}
	ok := func(answer ...string) want { return want{aa: true, answer: answer} }

	tests := []struct {
		name  string
		qname string
		qtype uint16
		want  want
	}{
		// Apex.
		{"apex SOA", "box.example.org.", dns.TypeSOA, ok("%s 3600 SOA ns1.box.example.org. hostmaster.example.org. SERIAL 7200 3600 1209600 60")},
		{"apex NS with glue", "box.example.org.", dns.TypeNS, want{aa: true,
			answer: []string{"%s 3600 NS ns1.box.example.org.", "%s 3600 NS ns2.other.example.net."},
			extra:  []string{"ns1.box.example.org. 3600 A 203.0.113.53", "ns1.box.example.org. 3600 AAAA 2001:db8::53"}}},
		{"apex A", "box.example.org.", dns.TypeA, ok("%s 3600 A 203.0.113.1")},
		{"apex AAAA not configured", "box.example.org.", dns.TypeAAAA, nodata},
		{"apex CAA", "box.example.org.", dns.TypeCAA, ok(`%s 3600 CAA 0 issue "letsencrypt.org"`)},
		{"apex MX", "box.example.org.", dns.TypeMX, ok("%s 3600 MX 10 mail.example.net.")},
		{"apex TXT", "box.example.org.", dns.TypeTXT, ok(`%s 3600 TXT "v=spf1 -all"`)},
		{"apex ANY is minimal", "box.example.org.", dns.TypeANY, ok(`%s 60 HINFO "RFC8482" ""`)},
		// Static names.
		{"api A defaults to tunnel", "api.box.example.org.", dns.TypeA, ok("%s 3600 A 203.0.113.10")},
		{"api AAAA", "api.box.example.org.", dns.TypeAAAA, ok("%s 3600 AAAA 2001:db8::10")},
		{"ns1 A", "ns1.box.example.org.", dns.TypeA, ok("%s 3600 A 203.0.113.53")},
		{"ns1 AAAA", "ns1.box.example.org.", dns.TypeAAAA, ok("%s 3600 AAAA 2001:db8::53")},
		{"ns1 TXT", "ns1.box.example.org.", dns.TypeTXT, nodata},
		{"host", "www.box.example.org.", dns.TypeA, ok("%s 3600 A 203.0.113.80")},
		{"deep host", "status.eu.box.example.org.", dns.TypeA, ok("%s 3600 A 203.0.113.81")},
		{"static empty non-terminal", "eu.box.example.org.", dns.TypeA, nodata},
		{"below a static name", "x.eu.box.example.org.", dns.TypeA, nxdomain},
		{"below api", "x.api.box.example.org.", dns.TypeA, nxdomain},
		// Gateways by mode.
		{"tunnel A", "tun.box.example.org.", dns.TypeA, ok(tunnelA...)},
		{"tunnel AAAA", "tun.box.example.org.", dns.TypeAAAA, ok("%s 60 AAAA 2001:db8::10")},
		{"dynamic A", "dyn.box.example.org.", dns.TypeA, ok("%s 60 A 198.51.100.8")},
		{"dynamic AAAA", "dyn.box.example.org.", dns.TypeAAAA, ok("%s 60 AAAA 2001:db8:1::8")},
		{"dynamic without v6", "nolocal.box.example.org.", dns.TypeAAAA, nodata},
		{"gateway other type", "tun.box.example.org.", dns.TypeMX, nodata},
		{"gateway ANY", "tun.box.example.org.", dns.TypeANY, ok(`%s 60 HINFO "RFC8482" ""`)},
		{"gateway TXT record", "chal.box.example.org.", dns.TypeTXT, ok(`%s 60 TXT "hello"`)},
		{"gateway A record skipped", "chal.box.example.org.", dns.TypeA, ok(tunnelA...)},
		// local.
		{"local A", "local.tun.box.example.org.", dns.TypeA, ok("%s 60 A 192.168.1.10")},
		{"local AAAA absent", "local.tun.box.example.org.", dns.TypeAAAA, nodata},
		{"local A dual", "local.dyn.box.example.org.", dns.TypeA, ok("%s 60 A 192.168.1.11")},
		{"local AAAA dual", "local.dyn.box.example.org.", dns.TypeAAAA, ok("%s 60 AAAA fd00::11")},
		{"local unknown", "local.nolocal.box.example.org.", dns.TypeA, nxdomain},
		{"local CNAME record skipped", "local.chal.box.example.org.", dns.TypeA, nxdomain},
		// Challenges: every value, short TTL.
		{"challenge", "_acme-challenge.chal.box.example.org.", dns.TypeTXT,
			ok(`%s 60 TXT "challenge-one"`, `%s 60 TXT "challenge-two"`)},
		{"challenge below", "_acme-challenge.www.chal.box.example.org.", dns.TypeTXT, ok(`%s 60 TXT "challenge-www"`)},
		{"challenge A", "_acme-challenge.chal.box.example.org.", dns.TypeA, nodata},
		{"no challenge", "_acme-challenge.tun.box.example.org.", dns.TypeTXT, nxdomain},
		// Records and CNAMEs.
		{"record A", "svc.chal.box.example.org.", dns.TypeA, ok("%s 60 A 10.0.0.1")},
		{"record AAAA", "svc.chal.box.example.org.", dns.TypeAAAA, ok("%s 60 AAAA fd00::1")},
		{"CNAME in zone followed", "www.chal.box.example.org.", dns.TypeA,
			ok("%s 60 CNAME tun.box.example.org.", "tun.box.example.org. 60 A 203.0.113.10")},
		{"CNAME asked", "www.chal.box.example.org.", dns.TypeCNAME, ok("%s 60 CNAME tun.box.example.org.")},
		{"CNAME out of zone", "ext.chal.box.example.org.", dns.TypeAAAA, ok("%s 120 CNAME example.net.")},
		{"CNAME to nothing", "dangling.chal.box.example.org.", dns.TypeA, want{rcode: dns.RcodeNameError, aa: true,
			answer: []string{"%s 60 CNAME nothere.box.example.org."}, ns: []string{negSOA}}},
		{"CNAME to no data", "www.chal.box.example.org.", dns.TypeMX, want{aa: true,
			answer: []string{"%s 60 CNAME tun.box.example.org."}, ns: []string{negSOA}}},
		{"empty non-terminal", "b.chal.box.example.org.", dns.TypeTXT, nodata},
		{"empty non-terminal deeper", "a.b.chal.box.example.org.", dns.TypeTXT, nodata},
		{"record below ENT", "deep.a.b.chal.box.example.org.", dns.TypeTXT, ok(`%s 60 TXT "deep"`)},
		{"nothing below gateway", "nothere.chal.box.example.org.", dns.TypeA, nxdomain},
		{"below a record", "x.svc.chal.box.example.org.", dns.TypeA, nxdomain},
		// Unknown, expired, outside.
		{"unknown", "nobody.box.example.org.", dns.TypeA, nxdomain},
		{"below unknown", "local.nobody.box.example.org.", dns.TypeA, nxdomain},
		{"expired", "gone.box.example.org.", dns.TypeA, nxdomain},
		{"expired local", "local.gone.box.example.org.", dns.TypeA, nxdomain},
		{"outside", "example.com.", dns.TypeA, refused},
		{"parent", "example.org.", dns.TypeSOA, refused},
		{"suffix lookalike", "xbox.example.org.", dns.TypeA, refused},
		{"escaped dot in a label", `tun\.x.box.example.org.`, dns.TypeA, nxdomain},
		{"escaped dot below a gateway", `a\.b.chal.box.example.org.`, dns.TypeTXT, nxdomain},
		{"root", ".", dns.TypeNS, refused},
		{"AXFR through Answer", "box.example.org.", dns.TypeAXFR, refused},
		{"IXFR through Answer", "box.example.org.", dns.TypeIXFR, refused},
		{"OPT as a type", "box.example.org.", dns.TypeOPT, want{rcode: dns.RcodeFormatError}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, proto := range []string{"udp", "tcp"} {
				req := query(tt.qname, tt.qtype)
				got := h.Answer(req, client, proto)
				check(t, h, req, got, tt.want.rcode, tt.want.aa, tt.want.tc, tt.want.answer, tt.want.ns, tt.want.extra)
			}
		})
	}
}

// check compares a reply with the expected rcode, flags and sections;
// "%s" in expected records stands for the question name.
func check(t *testing.T, h *Handler, req, got *dns.Msg, rcode int, aa, tc bool, answer, ns, extra []string) {
	t.Helper()
	if got.Id != req.Id || !got.Response || got.RecursionAvailable || got.RecursionDesired != req.RecursionDesired {
		t.Errorf("header id %d/%d qr %v ra %v rd %v", got.Id, req.Id, got.Response, got.RecursionAvailable, got.RecursionDesired)
	}
	if len(req.Question) > 0 && (len(got.Question) != 1 || got.Question[0] != req.Question[0]) {
		t.Errorf("question %v, want %v", got.Question, req.Question[0])
	}
	if got.Rcode != rcode || got.Authoritative != aa || got.Truncated != tc {
		t.Errorf("rcode %s aa %v tc %v, want %s aa %v tc %v", dns.RcodeToString[got.Rcode], got.Authoritative,
			got.Truncated, dns.RcodeToString[rcode], aa, tc)
	}
	serial := fmt.Sprint(h.idx.Serial())
	norm := func(rrs []dns.RR) []string {
		out := fmtRRs(rrs)
		for i := range out {
			out[i] = strings.Replace(out[i], serial, "SERIAL", 1)
		}
		return out
	}
	expand := func(want []string) []string {
		out := make([]string, len(want))
		for i, w := range want {
			out[i] = strings.ReplaceAll(w, "%s", req.Question[0].Name)
		}
		return out
	}
	for _, s := range []struct {
		name      string
		got, want []string
	}{{"answer", norm(got.Answer), expand(answer)}, {"authority", norm(got.Ns), expand(ns)}, {"additional", norm(got.Extra), expand(extra)}} {
		if !slices.Equal(s.got, s.want) && (len(s.got) > 0 || len(s.want) > 0) {
			t.Errorf("%s:\n got %q\nwant %q", s.name, s.got, s.want)
		}
	}
	if _, err := got.Pack(); err != nil {
		t.Errorf("reply does not pack: %v", err)
	}
}

func TestAnswerCaseIsPreserved(t *testing.T) {
	h := testHandler(t)
	req := query("TuN.bOx.ExAmPlE.oRg.", dns.TypeA)
	got := h.Answer(req, netip.Addr{}, "udp")
	check(t, h, req, got, dns.RcodeSuccess, true, false, []string{"%s 60 A 203.0.113.10"}, nil, nil)
	if got.Question[0].Name != "TuN.bOx.ExAmPlE.oRg." {
		t.Errorf("question %q", got.Question[0].Name)
	}
	req = query("NoBody.BOX.example.org.", dns.TypeA)
	check(t, h, req, h.Answer(req, netip.Addr{}, "udp"), dns.RcodeNameError, true, false, nil, []string{negSOA}, nil)
	req = query("_ACME-Challenge.CHAL.box.example.org.", dns.TypeTXT)
	check(t, h, req, h.Answer(req, netip.Addr{}, "udp"), dns.RcodeSuccess, true, false,
		[]string{`%s 60 TXT "challenge-one"`, `%s 60 TXT "challenge-two"`}, nil, nil)
}

func TestAnswerRequestErrors(t *testing.T) {
	h := testHandler(t)
	client := netip.MustParseAddr("192.0.2.1")
	edns := func(m *dns.Msg, version uint8) *dns.Msg {
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(version)
		return m
	}
	twoQuestions := query("tun.box.example.org.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	noQuestion := query("tun.box.example.org.", dns.TypeA)
	noQuestion.Question = nil
	notify := query("box.example.org.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	update := query("box.example.org.", dns.TypeSOA)
	update.Opcode = dns.OpcodeUpdate
	response := query("tun.box.example.org.", dns.TypeA)
	response.Response = true
	twoOPT := edns(query("tun.box.example.org.", dns.TypeA), 0)
	twoOPT.Extra = append(twoOPT.Extra, twoOPT.Extra[0])
	chaos := query("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	chaosInZone := query("box.example.org.", dns.TypeTXT)
	chaosInZone.Question[0].Qclass = dns.ClassCHAOS

	tests := []struct {
		name     string
		req      *dns.Msg
		rcode    int
		wantOPT  bool
		question bool
	}{
		{"two questions", twoQuestions, dns.RcodeFormatError, false, true},
		{"no question", noQuestion, dns.RcodeFormatError, false, false},
		{"notify", notify, dns.RcodeNotImplemented, false, true},
		{"update", update, dns.RcodeNotImplemented, false, true},
		{"a response", response, dns.RcodeFormatError, false, true},
		{"EDNS version 1", edns(query("tun.box.example.org.", dns.TypeA), 1), dns.RcodeBadVers, true, true},
		{"two OPT records", twoOPT, dns.RcodeFormatError, false, true},
		{"chaos class", chaos, dns.RcodeRefused, false, true},
		{"chaos class in zone", chaosInZone, dns.RcodeRefused, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := h.Answer(tt.req, client, "udp")
			if got.Rcode != tt.rcode || got.Authoritative || len(got.Answer) > 0 {
				t.Errorf("rcode %d aa %v answer %v, want %d, no aa, no answer", got.Rcode, got.Authoritative, got.Answer, tt.rcode)
			}
			if (got.IsEdns0() != nil) != tt.wantOPT {
				t.Errorf("OPT in reply: %v, want %v", got.IsEdns0() != nil, tt.wantOPT)
			}
			if (len(got.Question) == 1) != tt.question {
				t.Errorf("question %v", got.Question)
			}
			// The extended rcode must survive the wire.
			b, err := got.Pack()
			if err != nil {
				t.Fatalf("pack: %v", err)
			}
			back := new(dns.Msg)
			if err := back.Unpack(b); err != nil || back.Rcode != tt.rcode {
				t.Errorf("on the wire rcode %d (%v), want %d", back.Rcode, err, tt.rcode)
			}
		})
	}
}

func TestAnswerEDNS(t *testing.T) {
	h := testHandler(t)
	req := query("tun.box.example.org.", dns.TypeA)
	req.SetEdns0(4096, true)
	got := h.Answer(req, netip.Addr{}, "udp")
	opt := got.IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 || !opt.Do() || opt.Version() != 0 {
		t.Fatalf("reply OPT %v, want size 1232, DO, version 0", opt)
	}
	plain := h.Answer(query("tun.box.example.org.", dns.TypeA), netip.Addr{}, "udp")
	if plain.IsEdns0() != nil {
		t.Error("OPT in the reply to a query without EDNS")
	}
}

func TestAnswerTruncation(t *testing.T) {
	h := testHandler(t)
	const name = "many.big.box.example.org."
	sizes := []struct {
		name  string
		edns  uint16
		proto string
		limit int
		tc    bool
	}{
		{"udp without EDNS", 0, "udp", 512, true},
		{"udp EDNS 4096 capped to ours", 4096, "udp", 1232, true},
		{"udp EDNS below 512", 200, "udp", 512, true},
		{"tcp", 0, "tcp", dns.MaxMsgSize, false},
	}
	for _, s := range sizes {
		t.Run(s.name, func(t *testing.T) {
			req := query(name, dns.TypeTXT)
			if s.edns > 0 {
				req.SetEdns0(s.edns, false)
			}
			got := h.Answer(req, netip.Addr{}, s.proto)
			b, err := got.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > s.limit || got.Truncated != s.tc {
				t.Errorf("%d bytes tc %v, want <= %d tc %v", len(b), got.Truncated, s.limit, s.tc)
			}
			if !s.tc && len(got.Answer) != 40 {
				t.Errorf("%d records, want 40", len(got.Answer))
			}
			if s.tc && len(got.Answer) != 0 {
				t.Errorf("%d records of a cut RRset sent", len(got.Answer))
			}
			if s.edns > 0 && got.IsEdns0() == nil {
				t.Error("OPT dropped by truncation")
			}
		})
	}
}

func TestAnswerSerialFollowsIndex(t *testing.T) {
	h := testHandler(t)
	soa := func() uint32 {
		return h.Answer(query(testZone, dns.TypeSOA), netip.Addr{}, "udp").Answer[0].(*dns.SOA).Serial
	}
	before := soa()
	h.idx.Remove("tun")
	if after := soa(); after == before {
		t.Errorf("serial %d unchanged after a removal", after)
	}
	if got := h.Answer(query("tun.box.example.org.", dns.TypeA), netip.Addr{}, "udp"); got.Rcode != dns.RcodeNameError {
		t.Errorf("removed gateway: rcode %d", got.Rcode)
	}
}
