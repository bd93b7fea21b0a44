package dnszone

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// serveUDP serves h on pc until the test ends.
func serveUDP(t *testing.T, h *Handler, pc net.PacketConn, opts ServerOptions) *Server {
	t.Helper()
	s := NewServer(h, []net.PacketConn{pc}, nil, opts)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// wrapped imitates Caddy's deletePacketConn, which offers the socket it
// wraps through Unwrap.
type wrapped struct{ net.PacketConn }

func (w wrapped) Unwrap() net.PacketConn { return w.PacketConn }

// TestUDPLoopTakesSockets checks which sockets get the batched loop: plain
// and unwrappable UDP sockets, not others, not when turned off.
func TestUDPLoopTakesSockets(t *testing.T) {
	h := testHandler(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, tc := range []struct {
		name    string
		pc      net.PacketConn
		readers int
		batched bool
	}{
		{"plain", pc, 0, true},
		{"unwrap", wrapped{pc}, 0, true},
		{"opaque", &sharedConn{PacketConn: pc}, 0, false},
		{"off", pc, -1, false},
	} {
		s := NewServer(h, []net.PacketConn{tc.pc}, nil, ServerOptions{UDPReaders: tc.readers})
		if got := len(s.loops) == 1; got != tc.batched {
			t.Errorf("%s: batched %v, want %v", tc.name, got, tc.batched)
		}
	}
}

// TestUDPLoopWildcardSource checks that a server on a wildcard address
// answers from the address each query was sent to: dns.Client's connected
// socket drops a reply from any other.
func TestUDPLoopWildcardSource(t *testing.T) {
	for _, tc := range []struct {
		network, bind string
		to            []string
	}{
		{"udp4", "0.0.0.0:0", []string{"127.0.0.1", "127.0.0.2"}},
		{"udp", "[::]:0", []string{"::1", "127.0.0.3"}},
	} {
		pc, err := net.ListenPacket(tc.network, tc.bind)
		if err != nil {
			t.Skipf("%s %s: %v", tc.network, tc.bind, err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		h := testHandler(t)
		s := serveUDP(t, h, pc, ServerOptions{})
		if len(s.loops) != 1 || !s.loops[0].pktinfo {
			t.Fatalf("%s: wildcard socket not served by the batched loop with packet info", tc.bind)
		}
		for _, ip := range tc.to {
			c := &dns.Client{Net: "udp", Timeout: time.Second}
			r, _, err := c.Exchange(query("tun.box.example.org.", dns.TypeA), net.JoinHostPort(ip, itoa(port)))
			if err != nil {
				t.Errorf("%s via %s: %v", tc.bind, ip, err)
				continue
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Errorf("%s via %s: %v", tc.bind, ip, r)
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestUDPLoopBurst sends a burst from one unconnected socket, so that the
// loop reads several datagrams per call, and checks that every query gets
// its own answer, malformed ones their FORMERR, responses nothing.
func TestUDPLoopBurst(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := testHandler(t, func(c *Config) { c.RRL.Disabled = true })
	serveUDP(t, h, pc, ServerOptions{UDPReaders: 2})
	cl, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 200
	names := []string{"tun.box.example.org.", "nosuch.box.example.org.", "example.com."}
	want := map[uint16]int{}
	for i := range n {
		q := query(names[i%len(names)], dns.TypeA)
		q.Id = uint16(i + 1)
		if i%2 == 0 {
			q.SetEdns0(1232, i%4 == 0)
		}
		b, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		switch i % 10 {
		case 7:
			b = b[:len(b)-3] // cut inside the question or OPT: FORMERR
			want[q.Id] = dns.RcodeFormatError
		case 9:
			b[2] |= 0x80 // a response: ignored
			want[q.Id] = -1
		default:
			want[q.Id] = []int{dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeRefused}[i%len(names)]
		}
		if _, err := cl.WriteTo(b, pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	got := map[uint16]int{}
	_ = cl.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		k, _, err := cl.ReadFrom(buf)
		if err != nil {
			break
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:k]); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if _, dup := got[r.Id]; dup {
			t.Errorf("two replies to %d", r.Id)
		}
		got[r.Id] = r.Rcode
		if len(got) == n-n/10 {
			// Wait a moment for replies that should not come.
			_ = cl.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		}
	}
	for id, rc := range want {
		g, ok := got[id]
		switch {
		case rc == -1 && ok:
			t.Errorf("query %d was a response but got a reply", id)
		case rc >= 0 && !ok:
			t.Errorf("query %d: no reply", id)
		case rc >= 0 && g != rc:
			t.Errorf("query %d: rcode %d, want %d", id, g, rc)
		}
	}
	if st := h.Stats(); st.Malformed != n/10 {
		t.Errorf("malformed %d, want %d", st.Malformed, n/10)
	}
}

// BenchmarkUDPServe is the batched loop's work for one datagram, sockets
// aside: unpack (fast path), rate limiting, answer, pack into the slot.
func BenchmarkUDPServe(b *testing.B) {
	h := testHandler(b)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	l, err := newUDPLoop(h, pc, 4096)
	if err != nil || l == nil {
		b.Fatalf("no loop: %v", err)
	}
	q := query("tun.box.example.org.", dns.TypeA)
	q.SetEdns0(1232, false)
	in, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	s := &udpSlot{out: make([]byte, 0, 4096), addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}}
	w := &batchWriter{loop: l, slot: s}
	b.ReportAllocs()
	for b.Loop() {
		s.hasReply = false
		l.serve(w, in)
		if !s.hasReply {
			b.Fatal("no reply")
		}
	}
}
