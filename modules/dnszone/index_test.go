package dnszone

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/miekg/dns"
)

func TestIndexPutRemove(t *testing.T) {
	x := NewIndex()
	g := &registry.Gateway{Name: "Home", Mode: registry.ModeTunnel, LocalAddrs: addrs("192.168.1.2")}
	x.Put(g, nil)
	if x.Len() != 1 {
		t.Fatalf("len %d", x.Len())
	}
	if _, ok := x.get("home"); !ok {
		t.Fatal("name not lower-cased")
	}
	s := x.Serial()
	x.Put(g, nil)
	if x.Serial() != s || x.Len() != 1 {
		t.Errorf("identical put: serial %d -> %d, len %d", s, x.Serial(), x.Len())
	}
	g.LastPing = time.Now() // what a ping changes is not in DNS
	x.Put(g, nil)
	if x.Serial() != s {
		t.Error("serial moved on a ping")
	}
	g.LocalAddrs = addrs("192.168.1.3")
	x.Put(g, nil)
	if x.Serial() == s {
		t.Error("serial did not move on an address change")
	}
	s = x.Serial()
	x.Put(g, []registry.Record{rec("_acme-challenge", "TXT", "v", 0)})
	if x.Serial() == s {
		t.Error("serial did not move on a record change")
	}
	s = x.Serial()
	g.Expired = true
	x.Put(g, nil)
	if x.Len() != 0 || x.Serial() == s {
		t.Errorf("expired: len %d serial moved %v", x.Len(), x.Serial() != s)
	}
	s = x.Serial()
	x.Remove("home")
	if x.Serial() != s {
		t.Error("serial moved removing an absent name")
	}
	for _, bad := range []string{"", "a.b", "with space", string(make([]byte, 64))} {
		x.Put(&registry.Gateway{Name: bad}, nil)
	}
	if x.Len() != 0 {
		t.Errorf("invalid names indexed: %d", x.Len())
	}
}

func TestIndexSerial(t *testing.T) {
	x := NewIndex()
	now := uint32(time.Now().Unix())
	if s := x.Serial(); s < now-1 || s > now+1 {
		t.Errorf("initial serial %d, want about %d", s, now)
	}
	// Far behind the clock: jumps to it. Ahead: one more.
	x.serial.Store(1000)
	x.bump()
	if s := x.Serial(); s < now {
		t.Errorf("serial %d did not catch up with %d", s, now)
	}
	x.serial.Store(now + 100)
	x.bump()
	if s := x.Serial(); s != now+101 {
		t.Errorf("serial %d, want %d", s, now+101)
	}
	// RFC 1982 wrap: still forward.
	x.serial.Store(^uint32(0))
	x.bump()
	if s := x.Serial(); s != 0 && s < now {
		t.Errorf("serial after wrap %d", s)
	}
}

func TestIndexCompactEntry(t *testing.T) {
	x := NewIndex()
	x.Put(&registry.Gateway{Name: "typical", Mode: registry.ModeTunnel,
		PublicV4: netip.MustParseAddr("198.51.100.1"), LocalAddrs: addrs("192.168.1.2")}, nil)
	e, _ := x.get("typical")
	if e.ext != nil {
		t.Errorf("typical gateway allocated an extra: %+v", *e.ext)
	}
	x.Put(&registry.Gateway{Name: "mapped", Mode: registry.ModeDynamic,
		PublicV4: netip.MustParseAddr("::ffff:198.51.100.1"), LocalAddrs: addrs("::ffff:192.168.1.2")}, nil)
	e, _ = x.get("mapped")
	if e.ext != nil || e.flags&flagPub4 == 0 || e.pub4 != [4]byte{198, 51, 100, 1} {
		t.Errorf("4in6 addresses not unmapped: %+v", e)
	}
}

func TestIndexRecords(t *testing.T) {
	x := NewIndex()
	x.Put(&registry.Gateway{Name: "r", Mode: registry.ModeTunnel}, []registry.Record{
		rec("@", "txt", "apex", 0),
		rec("WWW.", "a", "10.0.0.1", 0),
		rec("www", "A", "10.0.0.1", 0), // duplicate after normalization
		rec("www", "A", "not an address", 0),
		rec("www", "AAAA", "10.0.0.2", 0),
		rec("www", "A", "fd00::1", 0),
		rec("www", "MX", "mail.example.net", 0),
		rec("bad..owner", "TXT", "x", 0),
		rec("c", "CNAME", "bad..target", 0),
		rec("long", "TXT", string(make([]byte, 600)), 90*time.Second),
	})
	e, _ := x.get("r")
	want := []record{
		{owner: "", rtype: dns.TypeTXT, data: "apex"},
		{owner: "long", rtype: dns.TypeTXT, ttl: 90, data: string(make([]byte, 600))},
		{owner: "www", rtype: dns.TypeA, data: "\x0a\x00\x00\x01"},
	}
	if fmt.Sprint(e.recs()) != fmt.Sprint(want) {
		t.Errorf("records\n got %+v\nwant %+v", e.recs(), want)
	}
	h, err := NewHandler(testConfig(), x, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := h.Answer(query("long.r.box.example.org.", dns.TypeTXT), netip.Addr{}, "tcp")
	if txt := got.Answer[0].(*dns.TXT).Txt; len(txt) != 3 || len(txt[0]) != 255 {
		t.Errorf("600-byte TXT split as %d strings", len(txt))
	}
	b, err := got.Pack()
	if err != nil {
		t.Fatal(err)
	}
	back := new(dns.Msg)
	if err := back.Unpack(b); err != nil {
		t.Fatal(err)
	}
	if joined := back.Answer[0].(*dns.TXT).Txt; len(joined) != 3 {
		t.Errorf("round trip %d strings", len(joined))
	}
}

func TestTXTEscaping(t *testing.T) {
	x := NewIndex()
	const value = `back\slash "quoted" \065`
	x.Put(&registry.Gateway{Name: "esc"}, []registry.Record{rec("t", "TXT", value, 0)})
	h, err := NewHandler(testConfig(), x, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Answer(query("t.esc.box.example.org.", dns.TypeTXT), netip.Addr{}, "udp").Pack()
	if err != nil {
		t.Fatal(err)
	}
	// The raw value travels byte for byte.
	if !containsBytes(b, []byte(value)) {
		t.Errorf("wire form lost %q", value)
	}
}

func containsBytes(b, sub []byte) bool {
	for i := 0; i+len(sub) <= len(b); i++ {
		if string(b[i:i+len(sub)]) == string(sub) {
			return true
		}
	}
	return false
}

// TestIndexConcurrent runs writers and readers together, for the race
// detector.
func TestIndexConcurrent(t *testing.T) {
	h := testHandler(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%d", w, i%50)
				h.idx.Put(&registry.Gateway{Name: name, Mode: registry.ModeDynamic,
					PublicV4: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})},
					[]registry.Record{rec("_acme-challenge", "TXT", fmt.Sprint(i), 0)})
				if i%3 == 0 {
					h.idx.Remove(name)
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for i := range 2000 {
				name := fmt.Sprintf("_acme-challenge.w%d-%d.box.example.org.", i%2, i%50)
				m := h.Answer(query(name, dns.TypeTXT), netip.Addr{}, "udp")
				if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
					t.Errorf("rcode %d", m.Rcode)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	var n int
	h.idx.forEach(func(string, entry) bool { n++; return true })
	if n != h.idx.Len() {
		t.Errorf("forEach saw %d, Len %d", n, h.idx.Len())
	}
}
