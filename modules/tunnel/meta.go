package tunnel

import (
	"net/netip"
)

// Meta describes one stream, whatever kind of tunnel carries it: which
// gateway it goes to, who asked for it and from where. It is the typed
// form of what the wire's Initiator carries, so that ingress, the offline
// page and forwarding never read a field whose meaning depends on the leg.
type Meta struct {
	// Gateway is the gateway the stream goes to.
	Gateway string
	// ServerName is the TLS server name the client asked for (ingress);
	// empty for forwarded streams.
	ServerName string
	// Client is the original client's address, as the cloud saw it on
	// its own socket (never as a peer claims it); invalid when unknown.
	Client netip.AddrPort
	// Source is the gateway that opened a forwarded stream; empty for
	// ingress from the internet.
	Source string
	// Dest is the destination behind the target gateway of a forwarded
	// stream; invalid for ingress.
	Dest netip.AddrPort
}

// Forwarded reports whether m is an agent-to-agent forward rather than
// ingress from the internet.
func (m Meta) Forwarded() bool { return m.Source != "" || m.Dest.IsValid() }

// Initiator is m as the wire carries it. Session.Open fills the GUID and
// Window; ServerName does not travel (the agent reads it in the ClientHello
// it terminates). Source is sent to peers that speak VersionSource; for
// older ones Session.Open puts it in Gatename, as version 1 did.
func (m Meta) Initiator() Initiator {
	init, _ := m.initiator()
	return init
}

// initiator is Initiator, and whether its addresses need no parsing to be
// known valid: without a zone, the text of a valid netip value always
// parses back (a zone is any string, which might not).
func (m Meta) initiator() (init Initiator, typedAddrs bool) {
	init = Initiator{Gatename: m.Gateway, Source: m.Source}
	if m.Client.IsValid() {
		init.ClientAddr = m.Client.String()
	}
	if m.Dest.IsValid() {
		init.Ip = m.Dest.Addr().String()
		init.Port = m.Dest.Port()
	}
	return init, m.Client.Addr().Zone() == "" && m.Dest.Addr().Zone() == ""
}

// MetaFromInitiator is the typed form of init, as the receiving side reads
// it. Unparsable addresses stay invalid.
//
// The version 1 rule: a cloud that predates Source told the target of a
// forward who asked by putting the source gateway in Gatename. A forwarded
// Initiator (Ip or Port set) without Source is read that way: Source is its
// Gatename, and Gateway is left empty (it is the receiving gateway itself).
// A cloud of this version always sets Source on a forward's target leg for
// agents of this version, and never sets Ip or Port on ingress.
func MetaFromInitiator(init Initiator) Meta {
	m := Meta{Gateway: init.Gatename, Source: init.Source}
	if ap, err := netip.ParseAddrPort(init.ClientAddr); err == nil {
		m.Client = ap
	}
	if ip, err := netip.ParseAddr(init.Ip); err == nil {
		m.Dest = netip.AddrPortFrom(ip, init.Port)
	}
	if m.Source == "" && (init.Ip != "" || init.Port != 0) {
		m.Source, m.Gateway = init.Gatename, ""
	}
	return m
}
