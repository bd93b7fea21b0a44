package dnszone

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// recorder is a dns.ResponseWriter that keeps what is written; panicky
// makes RemoteAddr panic once, as a bug in the query path would.
type recorder struct {
	panicky bool
	written []*dns.Msg
}

func (r *recorder) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr {
	if r.panicky {
		r.panicky = false
		panic("boom")
	}
	return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4242}
}
func (r *recorder) WriteMsg(m *dns.Msg) error { r.written = append(r.written, m); return nil }
func (r *recorder) Write([]byte) (int, error) { return 0, nil }
func (r *recorder) Close() error              { return nil }
func (r *recorder) TsigStatus() error         { return nil }
func (r *recorder) TsigTimersOnly(bool)       {}
func (r *recorder) Hijack()                   {}
func (r *recorder) Network() string           { return "udp" }

func TestServeDNSRecovers(t *testing.T) {
	h := testHandler(t)
	w := &recorder{panicky: true}
	req := query("tun.box.example.org.", dns.TypeA)
	h.ServeDNS(w, req)
	if len(w.written) != 1 || w.written[0].Rcode != dns.RcodeServerFailure || w.written[0].Id != req.Id {
		t.Fatalf("written %v", w.written)
	}
	st := h.Stats()
	if st.Panics != 1 || st.Rcodes["SERVFAIL"] != 1 {
		t.Errorf("stats %+v", st)
	}
	// The handler goes on answering.
	h.ServeDNS(w, req)
	if len(w.written) != 2 || len(w.written[1].Answer) != 1 {
		t.Errorf("after the panic: %v", w.written[1:])
	}
}
