package dnszone

import (
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// outcome classifies a query, as RFC 1034 4.3.2 and RFC 2308 do: the reply
// is built from it in one place (Handler.reply).
type outcome uint8

const (
	// success: NOERROR with records in the answer section.
	success outcome = iota
	// noData: NOERROR, the name exists but has no record of the type; SOA
	// in the authority section.
	noData
	// nxDomain: the name does not exist; SOA in the authority section.
	nxDomain
	// refused: outside the zone, another class, or a transfer.
	refused
	// formErr: malformed query (not one question, several OPT records, a
	// meta type asked as data).
	formErr
	// notImp: an opcode other than QUERY.
	notImp
	// badVers: an EDNS version other than 0 (RFC 6891 6.1.3).
	badVers
)

// lookup is the classification of one question and the records found.
type lookup struct {
	outcome outcome
	// answer holds the records, and the CNAMEs followed to reach them.
	answer []dns.RR
	// extra holds additional records (glue); it may be shared, never
	// modify it.
	extra []dns.RR
}

// maxCNAMEHops bounds the CNAME chains followed inside the zone, so that a
// loop of gateway records ends.
const maxCNAMEHops = 8

type nodeKind uint8

const (
	// nodeNone: the name does not exist.
	nodeNone nodeKind = iota
	// nodeENT: an empty non-terminal, a parent of deeper names only.
	nodeENT
	// nodeData: the name owns records.
	nodeData
)

// node is a name of the zone, either static (configured) or in a
// gateway's subtree.
type node struct {
	kind   nodeKind
	apex   bool
	static *staticNode
	gw     entry
	// sub is the name relative to the gateway ("" for NAME itself).
	sub string
}

// Answer computes the reply to req from a client over proto ("udp" or
// "tcp"), without side effects: it is the whole query logic except zone
// transfers, which ServeDNS streams itself for allowed clients (Answer
// refuses them), and rate limiting, which ServeDNS applies before it.
// The reply fits the size the transport allows, with TC set over UDP when
// it had to be cut.
func (h *Handler) Answer(req *dns.Msg, client netip.Addr, proto string) *dns.Msg {
	opt, optOK := requestOPT(req)
	var l lookup
	switch {
	case !optOK:
		opt = nil
		l.outcome = formErr
	case req.Response:
		l.outcome = formErr
	case req.Opcode != dns.OpcodeQuery:
		l.outcome = notImp
	case opt != nil && opt.Version() != 0:
		l.outcome = badVers
	case len(req.Question) != 1:
		l.outcome = formErr
	default:
		v := h.base
		if st := h.steering.Load(); st != nil {
			v = h.steeredView(st)
		}
		l = h.classify(v, req.Question[0])
	}
	return h.reply(req, l, opt, h.maxSize(opt, proto))
}

// classify finds the records that answer q in v and the class of the
// answer.
func (h *Handler) classify(v *zoneView, q dns.Question) lookup {
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY:
		return lookup{outcome: refused}
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		return lookup{outcome: refused}
	case q.Qtype == dns.TypeOPT:
		return lookup{outcome: formErr}
	}
	name := strings.ToLower(q.Name)
	// Answers carry the name as asked, so that they compress against the
	// question and keep a resolver's 0x20 case pattern.
	owner := q.Name
	var answer []dns.RR
	for hops := 0; ; hops++ {
		rel, in := relative(name, h.zone)
		if !in {
			if hops == 0 {
				return lookup{outcome: refused}
			}
			// A CNAME leaving the zone: the resolver follows it.
			return lookup{outcome: success, answer: answer}
		}
		n := h.find(v.static, rel)
		switch {
		case n.kind == nodeNone:
			return lookup{outcome: nxDomain, answer: answer}
		case n.kind == nodeENT:
			return lookup{outcome: noData, answer: answer}
		case q.Qtype == dns.TypeANY:
			// RFC 8482: one synthesized record instead of every RRset,
			// which would make ANY an amplification vector.
			hinfo := &dns.HINFO{Hdr: h.hdr(owner, dns.TypeHINFO, h.ttlGateway), Cpu: "RFC8482"}
			return lookup{outcome: success, answer: append(answer, hinfo)}
		}
		if rrs := h.rrset(v, n, q.Qtype, owner, nil); len(rrs) > 0 {
			l := lookup{outcome: success, answer: append(answer, rrs...)}
			if q.Qtype == dns.TypeNS && n.apex {
				l.extra = v.static.glue
			}
			return l
		}
		target, ttl := h.cname(n)
		if target == "" || q.Qtype == dns.TypeCNAME {
			return lookup{outcome: noData, answer: answer}
		}
		answer = append(answer, &dns.CNAME{Hdr: h.hdr(owner, dns.TypeCNAME, ttl), Target: target})
		if hops+1 == maxCNAMEHops {
			return lookup{outcome: success, answer: answer}
		}
		name, owner = target, target
	}
}

// find locates rel (relative to the zone) in the static names, then in the
// subtree of the gateway named by its last label. A label that static names
// use is never looked up as a gateway.
func (h *Handler) find(static *staticZone, rel string) node {
	// No name of the zone has an escaped label (a dot or a byte outside
	// the hostname set inside one); splitting on dots would misread it.
	if strings.IndexByte(rel, '\\') >= 0 {
		return node{}
	}
	if n, ok := static.nodes[rel]; ok {
		if rel == "" {
			return node{kind: nodeData, apex: true, static: n}
		}
		if len(n.rrs) == 0 {
			return node{kind: nodeENT}
		}
		return node{kind: nodeData, static: n}
	}
	dot := strings.LastIndexByte(rel, '.')
	top := rel[dot+1:]
	if static.top[top] {
		return node{}
	}
	// The zone's own records (the apex ACME challenge) sit under labels
	// that no gateway name can have.
	if z, ok := h.idx.zoneEntry(); ok {
		switch data, ent := z.lookupSub(rel); {
		case data:
			return node{kind: nodeData, gw: z, sub: rel}
		case ent:
			return node{kind: nodeENT}
		}
	}
	e, ok := h.idx.get(top)
	if !ok {
		return node{}
	}
	var sub string
	if dot >= 0 {
		sub = rel[:dot]
	}
	switch data, ent := e.lookupSub(sub); {
	case data:
		return node{kind: nodeData, gw: e, sub: sub}
	case ent:
		return node{kind: nodeENT}
	}
	return node{}
}

// rrset appends to dst the records of type t at n in v, owned by owner.
func (h *Handler) rrset(v *zoneView, n node, t uint16, owner string, dst []dns.RR) []dns.RR {
	if n.static != nil {
		if n.apex && t == dns.TypeSOA {
			return append(dst, h.soa(owner, h.ttlStatic))
		}
		for _, rr := range n.static.rrs[t] {
			c := dns.Copy(rr)
			c.Header().Name = owner
			dst = append(dst, c)
		}
		return dst
	}
	return h.gatewayRRs(v, n.gw, n.sub, t, owner, dst)
}

// gatewayRRs appends the records of type t at sub (relative to the
// gateway), owned by owner: NAME's addresses by mode (steered in v for
// tunnel mode), local.NAME's LAN addresses, and the gateway's own records.
func (h *Handler) gatewayRRs(v *zoneView, e entry, sub string, t uint16, owner string, dst []dns.RR) []dns.RR {
	if t == dns.TypeA || t == dns.TypeAAAA {
		switch sub {
		case "":
			if e.flags&flagTunnel != 0 && v.steer != nil {
				if out, ok := h.steeredTunnel(v.steer, owner, t, dst); ok {
					return out
				}
			}
			switch {
			case e.flags&flagTunnel != 0:
				tunnel := h.tunnel4
				if t == dns.TypeAAAA {
					tunnel = h.tunnel6
				}
				for _, ip := range tunnel {
					dst = append(dst, h.addrRR(owner, t, ip, h.ttlGateway))
				}
			case t == dns.TypeA && e.flags&flagPub4 != 0:
				dst = append(dst, h.addrRR(owner, t, ip4(e.pub4), h.ttlGateway))
			case t == dns.TypeAAAA && e.ext != nil && e.ext.pub6.IsValid():
				dst = append(dst, h.addrRR(owner, t, e.ext.pub6.AsSlice(), h.ttlGateway))
			}
			return dst
		case "local":
			if t == dns.TypeA && e.flags&flagLoc4 != 0 {
				dst = append(dst, h.addrRR(owner, t, ip4(e.loc4), h.ttlGateway))
			}
			if e.ext != nil {
				for _, a := range e.ext.local {
					if a.Is4() == (t == dns.TypeA) {
						dst = append(dst, h.addrRR(owner, t, a.AsSlice(), h.ttlGateway))
					}
				}
			}
			return dst
		}
	}
	for _, r := range e.recs() {
		if r.owner == sub && r.rtype == t {
			dst = append(dst, h.recordRR(r, owner))
		}
	}
	return dst
}

// cname returns the CNAME target at n, if any.
func (h *Handler) cname(n node) (target string, ttl uint32) {
	if n.static != nil {
		return "", 0
	}
	for _, r := range n.gw.recs() {
		if r.owner == n.sub && r.rtype == dns.TypeCNAME {
			return r.data, h.recordTTL(r)
		}
	}
	return "", 0
}

func (h *Handler) recordRR(r record, owner string) dns.RR {
	hdr := h.hdr(owner, r.rtype, h.recordTTL(r))
	switch r.rtype {
	case dns.TypeA:
		return &dns.A{Hdr: hdr, A: net.IP(r.data)}
	case dns.TypeAAAA:
		return &dns.AAAA{Hdr: hdr, AAAA: net.IP(r.data)}
	case dns.TypeCNAME:
		return &dns.CNAME{Hdr: hdr, Target: r.data}
	default:
		return &dns.TXT{Hdr: hdr, Txt: splitTXT(r.data)}
	}
}

// recordTTL is the record's own TTL or the gateway TTL, capped for ACME
// challenges: a CA must see a new challenge value soon after it is set.
func (h *Handler) recordTTL(r record) uint32 {
	ttl := r.ttl
	if ttl == 0 {
		ttl = h.ttlGateway
	}
	if r.rtype == dns.TypeTXT && (r.owner == "_acme-challenge" || strings.HasPrefix(r.owner, "_acme-challenge.")) {
		ttl = min(ttl, h.ttlChallenge)
	}
	return ttl
}

func (h *Handler) addrRR(owner string, t uint16, ip net.IP, ttl uint32) dns.RR {
	if t == dns.TypeA {
		return &dns.A{Hdr: h.hdr(owner, t, ttl), A: ip}
	}
	return &dns.AAAA{Hdr: h.hdr(owner, t, ttl), AAAA: ip}
}

func ip4(b [4]byte) net.IP { return net.IP(b[:]) }

func (h *Handler) hdr(owner string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

// soa returns the zone's SOA with the current serial.
func (h *Handler) soa(owner string, ttl uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     h.hdr(owner, dns.TypeSOA, ttl),
		Ns:      h.cfg.SOA.MName,
		Mbox:    h.cfg.SOA.RName,
		Serial:  h.idx.Serial(),
		Refresh: seconds(h.cfg.SOA.Refresh),
		Retry:   seconds(h.cfg.SOA.Retry),
		Expire:  seconds(h.cfg.SOA.Expire),
		Minttl:  h.ttlNegative,
	}
}

// reply builds the message for l: the one place where rcode, flags and
// sections follow from the classification.
func (h *Handler) reply(req *dns.Msg, l lookup, opt *dns.OPT, size int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	switch l.outcome {
	case success:
		m.Authoritative = true
		m.Answer = l.answer
		if len(l.extra) > 0 {
			// A copy: the OPT record is appended below, and l.extra is
			// shared.
			m.Extra = append(make([]dns.RR, 0, len(l.extra)+1), l.extra...)
		}
	case noData, nxDomain:
		m.Authoritative = true
		m.Answer = l.answer
		// RFC 2308 5: the SOA's TTL bounds how long the negative answer is
		// cached.
		m.Ns = []dns.RR{h.soa(h.zone, min(h.ttlStatic, h.ttlNegative))}
		if l.outcome == nxDomain {
			m.Rcode = dns.RcodeNameError
		}
	case refused:
		m.Rcode = dns.RcodeRefused
	case formErr:
		m.Rcode = dns.RcodeFormatError
	case notImp:
		m.Rcode = dns.RcodeNotImplemented
	case badVers:
		m.Rcode = dns.RcodeBadVers
	}
	if opt != nil {
		m.Extra = append(m.Extra, h.replyOPT(opt))
	}
	full := m.Answer
	m.Truncate(size)
	if len(m.Answer) < len(full) {
		m.Answer = wholeRRsets(m.Answer, full[len(m.Answer)])
	}
	// Truncate compresses only what would not fit otherwise; every answer
	// is compressed, so that it costs no more bytes than it needs (an A
	// answer for tun.box.example.org: 53 bytes instead of 72).
	m.Compress = true
	return m
}

// wholeRRsets drops the records of the RRset that truncation cut (next is
// its first record left out): a resolver must not use part of an RRset
// (RFC 2181 5 and 9), and sending it only wastes the datagram.
func wholeRRsets(kept []dns.RR, next dns.RR) []dns.RR {
	nh := next.Header()
	for len(kept) > 0 {
		h := kept[len(kept)-1].Header()
		if h.Rrtype != nh.Rrtype || !strings.EqualFold(h.Name, nh.Name) {
			break
		}
		kept = kept[:len(kept)-1]
	}
	return kept
}

// requestOPT returns the query's OPT record (nil without EDNS); ok is false
// when the OPT records are malformed (RFC 6891 6.1.1: more than one, or not
// owned by the root).
func requestOPT(req *dns.Msg) (opt *dns.OPT, ok bool) {
	for _, rr := range req.Extra {
		if o, isOPT := rr.(*dns.OPT); isOPT {
			if opt != nil || o.Hdr.Name != "." {
				return nil, false
			}
			opt = o
		}
	}
	return opt, true
}

// replyOPT advertises our buffer size and copies the DO bit (RFC 3225 3);
// options are not echoed: none is implemented.
func (h *Handler) replyOPT(req *dns.OPT) *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(uint16(h.bufSize))
	if req.Do() {
		o.SetDo()
	}
	return o
}

// maxSize is the largest reply the client takes: over UDP its advertised
// buffer (512 without EDNS), never more than ours; over TCP 64 KiB.
func (h *Handler) maxSize(opt *dns.OPT, proto string) int {
	if proto == "tcp" {
		return dns.MaxMsgSize
	}
	if opt == nil {
		return dns.MinMsgSize
	}
	return min(max(int(opt.UDPSize()), dns.MinMsgSize), h.bufSize)
}
