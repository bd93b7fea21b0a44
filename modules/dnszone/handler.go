// Package dnszone is the authoritative DNS server of a Gatehouse zone: it
// answers for the zone's static names (apex SOA, NS, CAA, MX, TXT, api,
// nameservers, hosts) and for every gateway's subtree (NAME by mode,
// local.NAME, _acme-challenge and the gateway's own records), from an
// in-memory Index kept in step with the registry, over UDP and TCP, with
// EDNS0, truncation, response rate limiting and zone transfers to allowed
// clients.
//
// It is plain Go over github.com/miekg/dns and knows nothing of Caddy: an
// adapter opens the sockets, loads the Index from the store and feeds it
// every change. It never recurses, never forwards, and signs nothing
// (no DNSSEC).
package dnszone

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Handler answers DNS queries for one zone. It implements dns.Handler; a
// Handler's configuration is fixed once built (build a new one to change
// it; the Index can be shared), only its Steering can change, and it is
// safe for concurrent use.
type Handler struct {
	cfg  Config
	zone string
	idx  *Index
	// base is the configuration's view, answered without steering and in
	// zone transfers.
	base *zoneView
	// steering is nil unless SetSteering set one.
	steering atomic.Pointer[steerState]
	log      *slog.Logger

	tunnel4, tunnel6 []net.IP
	// apiFollowsTunnel: Config.APIAddrs was not set, so api.ZONE answers
	// the tunnel addresses, steered ones too.
	apiFollowsTunnel bool

	ttlStatic, ttlGateway, ttlChallenge, ttlNegative, ttlSteered uint32
	bufSize                                                      int

	rrl   *limiter
	stats counters
}

var _ dns.Handler = (*Handler)(nil)

// NewHandler validates cfg and returns a Handler answering from idx. log
// receives panics and transfer events; nil discards them.
func NewHandler(cfg Config, idx *Index, log *slog.Logger) (*Handler, error) {
	if idx == nil {
		return nil, fmt.Errorf("%w: nil index", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		cfg:              c,
		zone:             c.Zone,
		idx:              idx,
		base:             &zoneView{static: buildStatic(c, nil)},
		log:              log,
		apiFollowsTunnel: len(cfg.APIAddrs) == 0,
		ttlStatic:        seconds(c.TTL.Static),
		ttlGateway:       seconds(c.TTL.Gateway),
		ttlChallenge:     seconds(c.TTL.Challenge),
		ttlNegative:      seconds(c.SOA.Minimum),
		ttlSteered:       seconds(c.TTL.Steered),
		bufSize:          c.EDNSBufSize,
	}
	for _, a := range c.TunnelAddrs {
		if a = a.Unmap(); a.Is4() {
			h.tunnel4 = append(h.tunnel4, a.AsSlice())
		} else {
			h.tunnel6 = append(h.tunnel6, a.AsSlice())
		}
	}
	if !c.RRL.Disabled {
		h.rrl = newLimiter(c.RRL)
	}
	return h, nil
}

// Index returns the index the handler answers from.
func (h *Handler) Index() *Index { return h.idx }

// ServeDNS answers one query: rate limiting over UDP, zone transfers for
// allowed clients over TCP, everything else through Answer. A panic is
// recovered, counted and answered with SERVFAIL, so no query brings the
// server down.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	defer func() {
		if p := recover(); p != nil {
			h.stats.panics.Add(1)
			h.log.Error("dns query panicked", "panic", p, "stack", string(debug.Stack()))
			h.servfail(w, req)
		}
	}()
	client, proto := peer(w)
	if proto == "udp" {
		h.stats.udp.Add(1)
	} else {
		h.stats.tcp.Add(1)
	}
	if proto == "udp" && h.rrl != nil {
		switch h.rrl.check(client) {
		case rrlDrop:
			h.stats.rateLimited.Add(1)
			return
		case rrlSlip:
			h.stats.slipped.Add(1)
			h.write(w, h.slip(req), true)
			return
		}
	}
	if isTransfer(req) {
		if proto == "tcp" && h.transferAllowed(req, client) {
			h.stats.rcodes[dns.RcodeSuccess].Add(1)
			h.transfer(w, req, client)
			return
		}
		h.stats.transfersRefused.Add(1)
	}
	m := h.Answer(req, client, proto)
	h.write(w, m, false)
}

func (h *Handler) write(w dns.ResponseWriter, m *dns.Msg, slip bool) {
	h.stats.count(m, slip)
	if err := w.WriteMsg(m); err != nil {
		h.stats.writeErrors.Add(1)
	}
}

// slip is the reply to a rate-limited query that is not dropped: no
// records, TC set, so that a real client retries over TCP and a spoofed
// victim receives no more bytes than the query.
func (h *Handler) slip(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Truncated = true
	if opt, ok := requestOPT(req); ok && opt != nil {
		m.Extra = []dns.RR{h.replyOPT(opt)}
	}
	return m
}

// servfail answers after a panic, itself guarded: the request may be what
// panicked.
func (h *Handler) servfail(w dns.ResponseWriter, req *dns.Msg) {
	defer func() { _ = recover() }()
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	h.write(w, m, false)
}

// peer returns the client address and "udp" or "tcp".
func peer(w dns.ResponseWriter) (netip.Addr, string) {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap(), "udp"
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap(), "tcp"
	}
	// Anything else that is not a stream is treated as datagrams: rate
	// limited and truncated like UDP.
	proto := "udp"
	if strings.HasPrefix(w.RemoteAddr().Network(), "tcp") {
		proto = "tcp"
	}
	ap, err := netip.ParseAddrPort(w.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, proto
	}
	return ap.Addr().Unmap(), proto
}
