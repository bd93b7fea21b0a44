package dnszone

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// transferChunk bounds the uncompressed size of the records of one
// transfer message, well under the 64 KiB a TCP message can hold.
const transferChunk = 32 << 10

// isTransfer reports whether req asks for a zone transfer.
func isTransfer(req *dns.Msg) bool {
	return !req.Response && req.Opcode == dns.OpcodeQuery && len(req.Question) == 1 &&
		(req.Question[0].Qtype == dns.TypeAXFR || req.Question[0].Qtype == dns.TypeIXFR)
}

// transferAllowed reports whether req, a transfer, is for this zone and
// from an allowed client. UDP transfers never are (RFC 5936 4.2).
func (h *Handler) transferAllowed(req *dns.Msg, client netip.Addr) bool {
	q := req.Question[0]
	if !strings.EqualFold(q.Name, h.zone) || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) {
		return false
	}
	for _, p := range h.cfg.TransferAllow {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// transfer streams the whole zone (RFC 5936), as configured (never
// steered, see SetSteering): SOA, the static names, the
// zone's own records, every gateway, SOA. An IXFR gets the same full transfer, which RFC 1995 4
// allows. The gateways are read shard by shard, so the transfer is not an
// atomic snapshot: both SOAs carry the serial read at the start, and a
// secondary sees later changes at the next serial.
func (h *Handler) transfer(w dns.ResponseWriter, req *dns.Msg, client netip.Addr) {
	h.stats.transfers.Add(1)
	start := time.Now()
	soa := h.soa(h.zone, h.ttlStatic)
	t := &transferWriter{h: h, w: w, req: req}
	t.add(soa)
	static := h.base.static
	for _, rel := range static.order {
		n := static.nodes[rel]
		types := make([]uint16, 0, len(n.rrs))
		for rt := range n.rrs {
			types = append(types, rt)
		}
		slices.Sort(types)
		for _, rt := range types {
			for _, rr := range n.rrs[rt] {
				t.add(rr)
			}
		}
	}
	if z, ok := h.idx.zoneEntry(); ok {
		for _, r := range z.recs() {
			t.add(h.recordRR(r, r.owner+"."+h.zone))
		}
	}
	h.idx.forEach(func(name string, e entry) bool {
		h.gatewayZone(name, e, t.add)
		return t.err == nil
	})
	t.add(soa)
	t.flush()
	if t.err != nil {
		h.log.Warn("dns zone transfer aborted", "client", client.String(), "error", t.err)
		return
	}
	h.log.Info("dns zone transfer", "client", client.String(), "records", t.records, "messages", t.messages,
		"serial", soa.Serial, "duration", time.Since(start))
}

// gatewayZone emits every record of one gateway, under canonical names.
func (h *Handler) gatewayZone(name string, e entry, emit func(dns.RR)) {
	fqdn := name + "." + h.zone
	local := "local." + fqdn
	var rrs []dns.RR
	rrs = h.gatewayRRs(h.base, e, "", dns.TypeA, fqdn, rrs)
	rrs = h.gatewayRRs(h.base, e, "", dns.TypeAAAA, fqdn, rrs)
	rrs = h.gatewayRRs(h.base, e, "local", dns.TypeA, local, rrs)
	rrs = h.gatewayRRs(h.base, e, "local", dns.TypeAAAA, local, rrs)
	for _, r := range e.recs() {
		owner := fqdn
		if r.owner != "" {
			owner = r.owner + "." + fqdn
		}
		// A record deep enough to overflow a domain name cannot be
		// queried either; it must not abort the transfer.
		if validName(owner) {
			rrs = append(rrs, h.recordRR(r, owner))
		}
	}
	for _, rr := range rrs {
		emit(rr)
	}
}

// transferWriter groups records into messages and sends them.
type transferWriter struct {
	h                 *Handler
	w                 dns.ResponseWriter
	req               *dns.Msg
	rrs               []dns.RR
	size              int
	records, messages int
	err               error
}

func (t *transferWriter) add(rr dns.RR) {
	if t.err != nil {
		return
	}
	n := dns.Len(rr)
	if t.size+n > transferChunk {
		t.flush()
	}
	t.rrs = append(t.rrs, rr)
	t.size += n
	t.records++
}

func (t *transferWriter) flush() {
	if t.err != nil || len(t.rrs) == 0 {
		return
	}
	m := new(dns.Msg)
	m.SetReply(t.req)
	m.Authoritative = true
	m.Compress = true
	m.Answer = t.rrs
	t.err = t.w.WriteMsg(m)
	t.messages++
	t.rrs = t.rrs[:0]
	t.size = 0
}
