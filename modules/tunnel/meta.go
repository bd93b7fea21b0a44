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
