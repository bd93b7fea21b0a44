package dnszone

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Steering tells the zone where tunnel-mode names point when several cloud nodes share
// it. Implementations answer from memory (never wait on a database).
type Steering interface {
	// TunnelAddrs returns the public addresses a tunnel-mode gateway's name resolves to:
	// its holders' addresses, or every live node's when no node holds it. Empty: fall back
	// to Config.TunnelAddrs.
	TunnelAddrs(gateway string) []netip.Addr
	// NameServers returns the live nodes as the zone's name servers (absolute host names,
	// with addresses for in-zone names), sorted by name. Empty: use Config.Nameservers.
	NameServers() []Nameserver
	// Version changes whenever anything the two methods above return may have changed.
	// It is read on every query, so it must be a cheap atomic load.
	//
	// The handler rebuilds the static names (NS, glue, api) once per version and keeps
	// them until the version moves: an implementation must make the new data visible
	// before it changes the version, or the old data may be kept under the new one.
	Version() uint64
}

// zoneView is what an answer reads besides the Index: the static names,
// and where tunnel-mode names point. A view never changes; a Steering's
// new version gets a new view.
type zoneView struct {
	static *staticZone
	// steer is nil without steering: tunnel-mode names answer
	// Config.TunnelAddrs with the gateway TTL.
	steer Steering
	// version is the Steering's version the static names were built at.
	version uint64
}

// steerState is a Steering and the view built for its last version seen.
type steerState struct {
	s Steering
	// mu makes one query rebuild the view after a version change while
	// the others wait for it, instead of all of them building their own.
	mu   sync.Mutex
	view atomic.Pointer[zoneView]
}

// SetSteering makes the handler answer tunnel-mode names, api.ZONE (when
// Config.APIAddrs was not set), the apex NS records, their glue and the
// addresses of in-zone nameservers from s, with TTL.Steered. nil removes
// the steering: the configuration answers again. Safe to call while
// serving; the next query uses it.
//
// Zone transfers always carry the configuration's view: the steered one
// changes without moving the SOA serial, so a secondary would keep a stale
// copy of it.
func (h *Handler) SetSteering(s Steering) {
	if s == nil {
		h.steering.Store(nil)
		return
	}
	h.steering.Store(&steerState{s: s})
}

// steeredView returns the view of st's current version, rebuilt when the
// version moved. Without steering, Answer reads the configuration's view
// (h.base) after one atomic load, and does not call it.
func (h *Handler) steeredView(st *steerState) *zoneView {
	v := st.s.Version()
	if cur := st.view.Load(); cur != nil && cur.version == v {
		return cur
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if cur := st.view.Load(); cur != nil && cur.version == v {
		return cur
	}
	// Built from what the Steering returns now, labelled with the version
	// read before: if the data moved on meanwhile, the version did too,
	// and the next query rebuilds.
	nv := &zoneView{static: h.steeredStatic(st.s), steer: st.s, version: v}
	st.view.Store(nv)
	return nv
}

// steeredStatic builds the static names with the Steering's nameservers
// and, when api.ZONE follows the tunnel addresses, its addresses for a
// name no node holds: every live node.
func (h *Handler) steeredStatic(s Steering) *staticZone {
	st := &steered{nameservers: h.usableNameservers(s.NameServers()), ttl: h.ttlSteered}
	if h.apiFollowsTunnel {
		st.api = usableAddrs(s.TunnelAddrs(""))
	}
	return buildStatic(h.cfg, st)
}

// usableNameservers returns the nameservers of ns that the zone can
// answer for, canonical and sorted: names that are domain names, in-zone
// ones with addresses (the glue a resolver needs) and not on a name the
// configuration uses for something else (the apex, api, a host). Dropped
// ones are logged: they point at a bug in the Steering.
func (h *Handler) usableNameservers(ns []Nameserver) []Nameserver {
	taken := map[string]bool{"": true, "api": true}
	for _, host := range h.cfg.Hosts {
		taken[strings.ToLower(strings.TrimSuffix(host.Name, "."))] = true
	}
	out := make([]Nameserver, 0, len(ns))
	for _, n := range ns {
		name := canonical(n.Name)
		addrs := usableAddrs(n.Addrs)
		rel, in := relative(name, h.zone)
		switch {
		case !validName(name) || strings.IndexByte(name, '\\') >= 0:
		case in && (taken[rel] || len(addrs) == 0):
		default:
			if !slices.ContainsFunc(out, func(o Nameserver) bool { return o.Name == name }) {
				out = append(out, Nameserver{Name: name, Addrs: addrs})
			}
			continue
		}
		h.log.Warn("dns steering: nameserver left out", "name", n.Name, "addrs", len(n.Addrs))
	}
	slices.SortFunc(out, func(a, b Nameserver) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// usableAddrs returns the valid addresses of addrs, unmapped and without
// zones, duplicates removed.
func usableAddrs(addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if !a.IsValid() {
			continue
		}
		a = a.Unmap().WithZone("")
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// steeredTunnel appends to dst the A or AAAA records (t) of owner, the
// name of a tunnel-mode gateway (NAME.ZONE, in any case), as s steers it;
// ok is false when s has no address for it at all, and the configuration
// answers.
func (h *Handler) steeredTunnel(s Steering, owner string, t uint16, dst []dns.RR) (_ []dns.RR, ok bool) {
	// The gateway's name is owner's first label: find took no escaped
	// label. Lower case, as the Index and the registry hold names.
	addrs := s.TunnelAddrs(strings.ToLower(owner[:strings.IndexByte(owner, '.')]))
	for i, a := range addrs {
		if !a.IsValid() {
			continue
		}
		ok = true
		a = a.Unmap()
		// A record twice in an RRset is a protocol error (RFC 2181 5).
		if a.Is4() != (t == dns.TypeA) || slices.ContainsFunc(addrs[:i], func(b netip.Addr) bool { return b.Unmap() == a }) {
			continue
		}
		var ip net.IP
		if a.Is4() {
			b := a.As4()
			ip = b[:]
		} else {
			b := a.As16()
			ip = b[:]
		}
		dst = append(dst, h.addrRR(owner, t, ip, h.ttlSteered))
	}
	return dst, ok
}
