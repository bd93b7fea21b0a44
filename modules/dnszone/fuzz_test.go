package dnszone

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fuzzSeeds are packed queries touching every rule, as starting points.
func fuzzSeeds(f *testing.F) {
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, q := range []struct {
		name string
		t    uint16
	}{
		{"tun.box.example.org.", dns.TypeA},
		{"dyn.box.example.org.", dns.TypeAAAA},
		{"local.dyn.box.example.org.", dns.TypeA},
		{"_acme-challenge.chal.box.example.org.", dns.TypeTXT},
		{"www.chal.box.example.org.", dns.TypeA},
		{"loop1.chal.box.example.org.", dns.TypeA},
		{"b.chal.box.example.org.", dns.TypeTXT},
		{"many.big.box.example.org.", dns.TypeTXT},
		{"box.example.org.", dns.TypeNS},
		{"box.example.org.", dns.TypeAXFR},
		{"TuN.BOX.example.org.", dns.TypeANY},
		{"example.com.", dns.TypeA},
	} {
		add(query(q.name, q.t))
		m := query(q.name, q.t)
		m.SetEdns0(1232, true)
		add(m)
	}
	m := query("tun.box.example.org.", dns.TypeA)
	m.SetEdns0(4096, false)
	m.IsEdns0().SetVersion(1)
	add(m)
	m = query("box.example.org.", dns.TypeSOA)
	m.Opcode = dns.OpcodeUpdate
	add(m)
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 2, 3})
}

// FuzzAnswer unpacks arbitrary bytes the way the server does and checks
// that Answer never panics and always returns a reply that packs within
// the transport's limit.
func FuzzAnswer(f *testing.F) {
	fuzzSeeds(f)
	h := testHandler(f, func(c *Config) {
		c.TransferAllow = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	})
	client := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		for _, proto := range []string{"udp", "tcp"} {
			m := h.Answer(req, client, proto)
			if m == nil || m.Id != req.Id || !m.Response {
				t.Fatalf("%s: bad reply %v", proto, m)
			}
			wire, err := m.Pack()
			if err != nil {
				t.Fatalf("%s: reply does not pack: %v\n%v", proto, err, m)
			}
			limit := dns.MaxMsgSize
			if proto == "udp" {
				limit = h.bufSize
			}
			if len(wire) > limit {
				t.Fatalf("%s: reply of %d bytes over %d", proto, len(wire), limit)
			}
		}
	})
}

// FuzzServer sends arbitrary packets to a real server over UDP, each
// followed by a well-formed query that must still be answered: the
// server's own parsing (header, accept function, FORMERR path), the
// handler and its recover all run as in production.
func FuzzServer(f *testing.F) {
	fuzzSeeds(f)
	h := testHandler(f)
	_, addr := startServer(f, h, ServerOptions{})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	var id uint16
	buf := make([]byte, 65535)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			return
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		id++
		sentinel := query("tun.box.example.org.", dns.TypeA)
		sentinel.Id = id
		sb, _ := sentinel.Pack()
		for attempt := 0; ; attempt++ {
			if _, err := conn.Write(sb); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				n, err := conn.Read(buf)
				if err != nil {
					if attempt < 2 {
						break
					}
					t.Fatalf("server stopped answering after %x: %v", b, err)
				}
				r := new(dns.Msg)
				if err := r.Unpack(buf[:n]); err != nil {
					t.Fatalf("reply to %x does not parse: %v", b, err)
				}
				if r.Id == id && len(r.Question) == 1 && r.Question[0] == sentinel.Question[0] && len(r.Answer) == 1 {
					if p := h.Stats().Panics; p > 0 {
						t.Fatalf("handler panicked (recovered) on %x", b)
					}
					return
				}
			}
		}
	})
}
