package dnszone

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/miekg/dns"
)

// udpWire sends req over UDP and returns the reply's bytes as they came.
func udpWire(t *testing.T, addr string, req *dns.Msg) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := req.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestAnswerSizes checks the size of answers on the wire: names are
// compressed against the question (RFC 1035 4.1.4), as other
// authoritative servers send them.
func TestAnswerSizes(t *testing.T) {
	h := testHandler(t)
	_, addr := startServer(t, h, ServerOptions{})
	for _, c := range []struct {
		name  string
		qtype uint16
		edns  bool
		size  int
	}{
		// Header 12, question 25, answer 2+10+4 (72 uncompressed).
		{"tun.box.example.org.", dns.TypeA, false, 53},
		{"tun.box.example.org.", dns.TypeA, true, 64},
		{"tun.box.example.org.", dns.TypeAAAA, false, 65},
		{"local.tun.box.example.org.", dns.TypeA, false, 59},
		// Two TXT records, the challenge's owner written once.
		{"_acme-challenge.chal.box.example.org.", dns.TypeTXT, false, 106},
		// NXDOMAIN: the SOA's owner, MNAME and RNAME point into the
		// question (136 uncompressed).
		{"nobody.box.example.org.", dns.TypeA, false, 91},
		// A CNAME whose target is in the zone: owner, target and the
		// target's record all compressed.
		{"www.chal.box.example.org.", dns.TypeA, false, 76},
		// The apex NS with glue.
		{"box.example.org.", dns.TypeNS, false, 130},
	} {
		t.Run(fmt.Sprintf("%s/%s/edns=%v", c.name, dns.TypeToString[c.qtype], c.edns), func(t *testing.T) {
			req := query(c.name, c.qtype)
			if c.edns {
				req.SetEdns0(1232, false)
			}
			wire := udpWire(t, addr, req)
			var m dns.Msg
			if err := m.Unpack(wire); err != nil {
				t.Fatal(err)
			}
			if len(wire) != c.size {
				t.Errorf("%d bytes, want %d: %v", len(wire), c.size, fmtRRs(append(append(m.Answer, m.Ns...), m.Extra...)))
			}
			uncompressed := m.Copy()
			uncompressed.Compress = false
			if u := uncompressed.Len(); len(wire) >= u && len(m.Answer)+len(m.Ns) > 0 {
				t.Errorf("%d bytes, not less than the %d of the uncompressed reply", len(wire), u)
			}
		})
	}
}

// TestTruncationCountsCompression checks that an RRset that fits only
// compressed is sent whole over UDP without TC: four 100-byte TXT records
// are 595 bytes uncompressed and 495 compressed, within 512.
func TestTruncationCountsCompression(t *testing.T) {
	x := testIndex(t)
	var recs []registry.Record
	for i := range 4 {
		recs = append(recs, rec("many", "TXT", fmt.Sprintf("%d%s", i, strings.Repeat("y", 99)), 0))
	}
	x.Put(&registry.Gateway{Name: "four", Mode: registry.ModeTunnel}, recs)
	h, err := NewHandler(testConfig(), x, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, h, ServerOptions{})
	wire := udpWire(t, addr, query("many.four.box.example.org.", dns.TypeTXT))
	var m dns.Msg
	if err := m.Unpack(wire); err != nil {
		t.Fatal(err)
	}
	if m.Truncated || len(m.Answer) != 4 || len(wire) != 495 {
		t.Errorf("tc %v, %d records, %d bytes; want all 4 records in 495 bytes", m.Truncated, len(m.Answer), len(wire))
	}
	// One more record no longer fits: TC, and no partial RRset.
	recs = append(recs, rec("many", "TXT", "4"+strings.Repeat("y", 99), 0))
	x.Put(&registry.Gateway{Name: "four", Mode: registry.ModeTunnel}, recs)
	if err := m.Unpack(udpWire(t, addr, query("many.four.box.example.org.", dns.TypeTXT))); err != nil {
		t.Fatal(err)
	}
	if !m.Truncated || len(m.Answer) != 0 {
		t.Errorf("five records: tc %v, %d records", m.Truncated, len(m.Answer))
	}
}
