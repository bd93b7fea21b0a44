package dnszone

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tcpQueryFrom asks name over TCP from src and returns the reply, or the
// error when none comes within a second.
func tcpQueryFrom(t *testing.T, src, addr, name string) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Net: "tcp", Timeout: time.Second,
		Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}}
	r, _, err := c.Exchange(query(name, dns.TypeA), addr)
	return r, err
}

// openIdle opens n connections from src that never send anything.
func openIdle(t *testing.T, src, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dialFrom(t, src, addr)
	}
	return conns
}

// closedByServer counts the connections the server has closed (a read
// ends with EOF or a reset, not with the short timeout).
func closedByServer(conns []net.Conn) int {
	n := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		var b [1]byte
		_, err := c.Read(b[:])
		var ne net.Error
		if errors.Is(err, io.EOF) || err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			n++
		}
	}
	return n
}

// TestServerTCPIdleFlood is the attack of issue 14 (3): one address opens
// more idle TCP connections than the listener holds. Another address, and
// the attacker's own address, must still be answered at once, and the
// attacker keeps no more connections than its share.
func TestServerTCPIdleFlood(t *testing.T) {
	h := testHandler(t)
	// Bounds scaled down from the defaults (1024 and 16) to keep the test
	// small; the attack is the same: more idle connections than slots.
	opts := ServerOptions{MaxTCPConns: 64, MaxTCPConnsPerClient: 8}
	_, addr := startServer(t, h, opts)
	idle := openIdle(t, "127.0.0.1", addr, 200)
	// Let the server accept them all.
	time.Sleep(200 * time.Millisecond)

	// tcpQueryFrom gives up after a second: on the server before the
	// bounds, the query waited behind the idle connections, in vain.
	for _, src := range []string{"127.0.0.2", "127.0.0.1"} {
		r, err := tcpQueryFrom(t, src, addr, "tun.box.example.org.")
		if err != nil {
			t.Fatalf("query from %s during the flood: %v", src, err)
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("query from %s: rcode %d, %d answers", src, r.Rcode, len(r.Answer))
		}
	}
	if kept := len(idle) - closedByServer(idle); kept > opts.MaxTCPConnsPerClient {
		t.Errorf("the flooding address still holds %d connections, more than its %d", kept, opts.MaxTCPConnsPerClient)
	}
}

// TestServerTCPManyClientsFlood fills the listener from several addresses,
// each within its own bound: a newcomer is still answered.
func TestServerTCPManyClientsFlood(t *testing.T) {
	h := testHandler(t)
	opts := ServerOptions{MaxTCPConns: 32, MaxTCPConnsPerClient: 8}
	_, addr := startServer(t, h, opts)
	var idle []net.Conn
	for _, src := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"} {
		idle = append(idle, openIdle(t, src, addr, 8)...)
	}
	time.Sleep(200 * time.Millisecond)
	r, err := tcpQueryFrom(t, "127.0.0.9", addr, "tun.box.example.org.")
	if err != nil {
		t.Fatalf("query from a newcomer with the listener full: %v", err)
	}
	if r.Rcode != dns.RcodeSuccess {
		t.Errorf("rcode %d", r.Rcode)
	}
	if kept := len(idle) - closedByServer(idle); kept > opts.MaxTCPConns {
		t.Errorf("%d idle connections held, more than the listener's %d", kept, opts.MaxTCPConns)
	}
}

// TestServerTCPIdleTimeout checks that a connection that asks nothing is
// closed after the read timeout, and one that asked after the idle timeout.
func TestServerTCPIdleTimeout(t *testing.T) {
	h := testHandler(t)
	_, addr := startServer(t, h, ServerOptions{ReadTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	silent := dialFrom(t, "127.0.0.1", addr)
	asked := dialFrom(t, "127.0.0.1", addr)
	b, _ := query("tun.box.example.org.", dns.TypeA).Pack()
	if _, err := asked.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"silent": silent, "asked": asked} {
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s connection still open after %v", name, time.Since(start))
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("%s connection closed after %v", name, d)
		}
	}
}
