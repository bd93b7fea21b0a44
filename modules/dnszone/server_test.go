package dnszone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// listenPair opens UDP and TCP on the same loopback port, as dig needs.
func listenPair(t testing.TB) (net.PacketConn, net.Listener, string) {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return pc, ln, addr
		}
		pc.Close()
	}
	t.Fatal("no free port for both UDP and TCP")
	return nil, nil, ""
}

// startServer serves h on a fresh loopback port until the test ends.
func startServer(t testing.TB, h *Handler, opts ServerOptions) (*Server, string) {
	t.Helper()
	pc, ln, addr := listenPair(t)
	s := NewServer(h, []net.PacketConn{pc}, []net.Listener{ln}, opts)
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
	return s, addr
}

func exchange(t testing.TB, proto, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange %s: %v", proto, m.Question[0].Name, err)
	}
	return r
}

func TestServerUDPAndTCP(t *testing.T) {
	h := testHandler(t)
	_, addr := startServer(t, h, ServerOptions{})
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			req := query("TUN.box.example.org.", dns.TypeA)
			r := exchange(t, proto, addr, req)
			check(t, h, req, r, dns.RcodeSuccess, true, false, []string{"%s 60 A 203.0.113.10"}, nil, nil)

			req = query("local.dyn.box.example.org.", dns.TypeAAAA)
			r = exchange(t, proto, addr, req)
			check(t, h, req, r, dns.RcodeSuccess, true, false, []string{"%s 60 AAAA fd00::11"}, nil, nil)

			req = query("nobody.box.example.org.", dns.TypeA)
			r = exchange(t, proto, addr, req)
			check(t, h, req, r, dns.RcodeNameError, true, false, nil, []string{negSOA}, nil)

			req = query("example.com.", dns.TypeA)
			r = exchange(t, proto, addr, req)
			check(t, h, req, r, dns.RcodeRefused, false, false, nil, nil, nil)
		})
	}
	st := h.Stats()
	if st.UDP != 4 || st.TCP != 4 || st.Rcodes["NOERROR"] != 4 || st.Rcodes["NXDOMAIN"] != 2 || st.Rcodes["REFUSED"] != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestServerTruncationThenTCP(t *testing.T) {
	h := testHandler(t)
	_, addr := startServer(t, h, ServerOptions{})
	req := query("many.big.box.example.org.", dns.TypeTXT)
	req.SetEdns0(4096, false)
	c := &dns.Client{Net: "udp", UDPSize: 4096, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(req, addr)
	if err != nil {
		t.Fatal(err)
	}
	r.Compress = true // as it was on the wire
	if !r.Truncated || r.Len() > 1232 {
		t.Errorf("udp: tc %v, %d bytes", r.Truncated, r.Len())
	}
	r = exchange(t, "tcp", addr, req)
	if r.Truncated || len(r.Answer) != 40 {
		t.Errorf("tcp: tc %v, %d records", r.Truncated, len(r.Answer))
	}
	if h.Stats().Truncated != 1 {
		t.Errorf("truncated count %d", h.Stats().Truncated)
	}
}

func TestServerTransfer(t *testing.T) {
	t.Run("refused by default", func(t *testing.T) {
		h := testHandler(t)
		_, addr := startServer(t, h, ServerOptions{})
		for _, proto := range []string{"udp", "tcp"} {
			r := exchange(t, proto, addr, query(testZone, dns.TypeAXFR))
			if r.Rcode != dns.RcodeRefused || len(r.Answer) > 0 {
				t.Errorf("%s AXFR: rcode %d, %d records", proto, r.Rcode, len(r.Answer))
			}
		}
		if st := h.Stats(); st.TransfersRefused != 2 || st.Transfers != 0 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("allowed over TCP", func(t *testing.T) {
		h := testHandler(t, func(c *Config) { c.TransferAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
		for i := range 3000 {
			h.idx.Put(&registry.Gateway{Name: fmt.Sprintf("bulk%d", i), Mode: registry.ModeTunnel, LocalAddrs: addrs("192.168.1.1")}, nil)
		}
		_, addr := startServer(t, h, ServerOptions{})
		if r := exchange(t, "udp", addr, query(testZone, dns.TypeAXFR)); r.Rcode != dns.RcodeRefused {
			t.Errorf("AXFR over UDP: rcode %d", r.Rcode)
		}
		if r := exchange(t, "tcp", addr, query("other.example.", dns.TypeAXFR)); r.Rcode != dns.RcodeRefused {
			t.Errorf("AXFR of another zone: rcode %d", r.Rcode)
		}
		for _, qtype := range []uint16{dns.TypeAXFR, dns.TypeIXFR} {
			tr := &dns.Transfer{}
			req := query(testZone, qtype)
			if qtype == dns.TypeIXFR {
				req.SetIxfr(testZone, 1, "ns1.box.example.org.", "hostmaster.example.org.")
			}
			env, err := tr.In(req, addr)
			if err != nil {
				t.Fatal(err)
			}
			var rrs []dns.RR
			messages := 0
			for e := range env {
				if e.Error != nil {
					t.Fatalf("%s: %v", dns.TypeToString[qtype], e.Error)
				}
				rrs = append(rrs, e.RR...)
				messages++
			}
			got := map[string]bool{}
			for _, rr := range rrs {
				got[fmtRR(rr)] = true
			}
			first, last := rrs[0].(*dns.SOA), rrs[len(rrs)-1].(*dns.SOA)
			if first.Serial != last.Serial || messages < 2 {
				t.Errorf("SOA serials %d %d, %d messages", first.Serial, last.Serial, messages)
			}
			for _, want := range []string{
				"box.example.org. 3600 NS ns1.box.example.org.",
				"ns1.box.example.org. 3600 A 203.0.113.53",
				"status.eu.box.example.org. 3600 A 203.0.113.81",
				"tun.box.example.org. 60 A 203.0.113.10",
				"local.tun.box.example.org. 60 A 192.168.1.10",
				"dyn.box.example.org. 60 AAAA 2001:db8:1::8",
				`_acme-challenge.chal.box.example.org. 60 TXT "challenge-two"`,
				"www.chal.box.example.org. 60 CNAME tun.box.example.org.",
				"local.bulk2999.box.example.org. 60 A 192.168.1.1",
			} {
				if !got[want] {
					t.Errorf("%s lacks %q", dns.TypeToString[qtype], want)
				}
			}
			if got["gone.box.example.org. 60 A 203.0.113.10"] {
				t.Error("expired gateway transferred")
			}
		}
		if h.Stats().Transfers != 2 {
			t.Errorf("transfers %d", h.Stats().Transfers)
		}
	})
}

func TestServerRateLimit(t *testing.T) {
	h := testHandler(t, func(c *Config) {
		// A burst of 5, then one response a second: slow refill keeps the
		// counts steady on a loaded machine.
		c.RRL = RRL{ResponsesPerSecond: 1, Window: 5 * time.Second, Slip: 2}
	})
	_, addr := startServer(t, h, ServerOptions{})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const flood = 40
	var answered, truncated, silent int
	buf := make([]byte, 2048)
	for i := range flood {
		req := query("tun.box.example.org.", dns.TypeA)
		req.Id = uint16(i + 1)
		b, _ := req.Pack()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := conn.Read(buf)
		if err != nil {
			silent++
			continue
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if r.Truncated && len(r.Answer) == 0 {
			truncated++
		} else {
			answered++
		}
	}
	// The burst, plus one a second while the drops time out (about 2s),
	// the rest split between slips and drops.
	if answered < 5 || answered > 10 || truncated < 10 || silent < 10 {
		t.Errorf("answered %d, truncated %d, silent %d", answered, truncated, silent)
	}
	// TCP is never limited.
	for range 10 {
		if r := exchange(t, "tcp", addr, query("tun.box.example.org.", dns.TypeA)); len(r.Answer) != 1 {
			t.Fatalf("tcp answer limited: %v", r)
		}
	}
	st := h.Stats()
	if st.RateLimited != uint64(silent) || st.Slipped != uint64(truncated) {
		t.Errorf("stats rate limited %d slipped %d, seen %d %d", st.RateLimited, st.Slipped, silent, truncated)
	}
}

func TestServerMalformed(t *testing.T) {
	h := testHandler(t)
	_, addr := startServer(t, h, ServerOptions{})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func(b []byte) *dns.Msg {
		t.Helper()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := conn.Read(buf)
		if err != nil {
			return nil
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		return r
	}
	if r := send([]byte{1, 2, 3, 4, 5}); r != nil {
		t.Errorf("reply to a packet without a header: %v", r)
	}
	// A header announcing a question that is not there.
	if r := send([]byte{0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'f', 'o'}); r == nil || r.Rcode != dns.RcodeFormatError || r.Id != 0xabcd {
		t.Errorf("truncated question: %v", r)
	}
	resp := query("tun.box.example.org.", dns.TypeA)
	resp.Response = true
	b, _ := resp.Pack()
	if r := send(b); r != nil {
		t.Errorf("reply to a response: %v", r)
	}
	twoQ := query("tun.box.example.org.", dns.TypeA)
	twoQ.Question = append(twoQ.Question, twoQ.Question[0])
	b, _ = twoQ.Pack()
	if r := send(b); r == nil || r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %v", r)
	}
	upd := query(testZone, dns.TypeSOA)
	upd.Opcode = dns.OpcodeUpdate
	b, _ = upd.Pack()
	if r := send(b); r == nil || r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("update: %v", r)
	}
	// Garbage on TCP closes that connection only.
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{0, 3, 1, 2, 3})
	tc.Close()
	b, _ = query("tun.box.example.org.", dns.TypeA).Pack()
	if r := send(b); r == nil || len(r.Answer) != 1 {
		t.Errorf("server stopped answering: %v", r)
	}
	if h.Stats().Malformed < 1 {
		t.Errorf("malformed count %d", h.Stats().Malformed)
	}
}

func TestServerSeesIndexChanges(t *testing.T) {
	h := testHandler(t)
	_, addr := startServer(t, h, ServerOptions{})
	req := query("fresh.box.example.org.", dns.TypeA)
	if r := exchange(t, "udp", addr, req); r.Rcode != dns.RcodeNameError {
		t.Fatalf("rcode %d", r.Rcode)
	}
	h.idx.Put(&registry.Gateway{Name: "fresh", Mode: registry.ModeDynamic, PublicV4: netip.MustParseAddr("198.51.100.99")}, nil)
	r := exchange(t, "udp", addr, req)
	check(t, h, req, r, dns.RcodeSuccess, true, false, []string{"%s 60 A 198.51.100.99"}, nil, nil)
}

func TestServerLifecycle(t *testing.T) {
	h := testHandler(t)
	if err := NewServer(h, nil, nil, ServerOptions{}).Start(); !errors.Is(err, ErrNoListeners) {
		t.Errorf("no listeners: %v", err)
	}
	// A socket that fails at once fails Start, which stops the others.
	pc, ln, _ := listenPair(t)
	ln.Close()
	// The closed socket fails either before Start returns or, when the
	// failure comes after the server reported itself started, on Errors.
	failing := NewServer(h, []net.PacketConn{pc}, []net.Listener{ln}, ServerOptions{})
	if err := failing.Start(); err == nil {
		select {
		case <-failing.Errors():
		case <-time.After(5 * time.Second):
			t.Error("a closed listener reported no error")
		}
		_ = failing.Shutdown(context.Background())
	}
	pc, ln, addr := listenPair(t)
	s := NewServer(h, []net.PacketConn{pc}, []net.Listener{ln}, ServerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	// An idle TCP client must not hold up the shutdown.
	var idle net.Conn
	for i := 0; ; i++ {
		c := &dns.Client{Net: "udp", Timeout: time.Second}
		if _, _, err := c.Exchange(query("tun.box.example.org.", dns.TypeA), addr); err == nil {
			break
		} else if i == 20 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := s.Start(); !errors.Is(err, ErrServerStarted) {
		t.Errorf("second start: %v", err)
	}
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if err := s.Start(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("start after shutdown: %v", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
	if _, err := net.ListenPacket("udp", addr); err != nil {
		t.Errorf("udp socket not released: %v", err)
	}
}

// TestServerStalledTransfer checks that a client that stops reading a
// transfer holds nothing: the write deadline aborts it, and Shutdown cuts
// what its context does not wait for.
func TestServerStalledTransfer(t *testing.T) {
	var logs syncBuffer
	c := testConfig()
	c.TransferAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	x := testIndex(t)
	for i := range 60000 {
		x.Put(&registry.Gateway{Name: fmt.Sprintf("bulk%d", i), Mode: registry.ModeTunnel, LocalAddrs: addrs("192.168.1.1")},
			[]registry.Record{rec("_acme-challenge", "TXT", strings.Repeat("v", 40), 0)})
	}
	h, err := NewHandler(c, x, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s, addr := startServer(t, h, ServerOptions{WriteTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	b, _ := query(testZone, dns.TypeAXFR).Pack()
	conn.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "transfer aborted") {
		if time.Now().After(deadline) {
			t.Fatalf("transfer to a stalled client never aborted; logs: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	s.Shutdown(ctx)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sharedConn imitates a reload-safe socket (Caddy's): several
// configurations read the same socket; closing one view unblocks its
// readers with a deadline that the next read of a closed view clears.
type sharedConn struct {
	net.PacketConn
	closed atomic.Bool
}

func (c *sharedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.closed.Load() {
		return 0, nil, net.ErrClosed
	}
	n, a, err := c.PacketConn.ReadFrom(p)
	if err != nil && c.closed.Load() {
		c.PacketConn.SetReadDeadline(time.Time{})
	}
	return n, a, err
}

func (c *sharedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.PacketConn.SetReadDeadline(time.Now())
	}
	return nil
}

// TestServerSharedSocketReload checks that shutting down the server of an
// old configuration leaves the new one, on the same socket, answering.
func TestServerSharedSocketReload(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addr := pc.LocalAddr().String()
	oldH := testHandler(t)
	old := NewServer(oldH, []net.PacketConn{&sharedConn{PacketConn: pc}}, nil, ServerOptions{})
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	newH := testHandler(t)
	newS := NewServer(newH, []net.PacketConn{&sharedConn{PacketConn: pc}}, nil, ServerOptions{})
	if err := newS.Start(); err != nil {
		t.Fatal(err)
	}
	defer newS.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := old.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	before := newH.Stats().UDP
	for i := range 5 {
		c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
		if _, _, err := c.Exchange(query("tun.box.example.org.", dns.TypeA), addr); err != nil {
			t.Fatalf("query %d after the old server stopped: %v", i, err)
		}
	}
	if newH.Stats().UDP-before != 5 {
		t.Errorf("new server answered %d of 5", newH.Stats().UDP-before)
	}
}
