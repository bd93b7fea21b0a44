package hub

import (
	"context"
	"net/netip"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// KindWebSocket is the Kind of an agent's WebSocket session.
const KindWebSocket = "websocket"

// WebSocketTunnel is an agent's multiplexed WebSocket session seen as a
// Tunnel. It also remembers the address the agent connected from, as this
// cloud saw it on its own socket, because that is the only client address
// of a forwarded stream the cloud can vouch for.
type WebSocketTunnel struct {
	s      *tunnel.Session
	remote netip.AddrPort
}

// NewWebSocketTunnel wraps s, whose agent connected from remote (invalid
// when unknown).
func NewWebSocketTunnel(s *tunnel.Session, remote netip.AddrPort) *WebSocketTunnel {
	return &WebSocketTunnel{s: s, remote: unmap(remote)}
}

// Session is the wrapped session.
func (w *WebSocketTunnel) Session() *tunnel.Session { return w.s }

// Remote is the agent's address as the cloud saw it.
func (w *WebSocketTunnel) Remote() netip.AddrPort { return w.remote }

// Open opens a stream described by m on the session. m.Initiator and
// Session.OpenMeta between them know the wire's rules (Source, or Gatename for
// agents older than tunnel.VersionSource).
func (w *WebSocketTunnel) Open(ctx context.Context, m tunnel.Meta) (Stream, error) {
	st, err := w.s.OpenMeta(ctx, m, nil)
	if err != nil {
		// A nil *tunnel.Stream must not become a non-nil Stream.
		return nil, err
	}
	return st, nil
}

// OpenEarly is Open sending early, the first bytes of the stream, with the
// Initiator to agents that take early data (tunnel.Session.OpenMeta).
func (w *WebSocketTunnel) OpenEarly(ctx context.Context, m tunnel.Meta, early []byte) (Stream, error) {
	st, err := w.s.OpenMeta(ctx, m, early)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Done is closed when the session has ended.
func (w *WebSocketTunnel) Done() <-chan struct{} { return w.s.Done() }

// Err is nil while the session is live.
func (w *WebSocketTunnel) Err() error { return w.s.Err() }

// CloseWithReason closes the session, sending reason to the agent.
func (w *WebSocketTunnel) CloseWithReason(reason string) error { return w.s.CloseWithReason(reason) }

// Kind is KindWebSocket.
func (w *WebSocketTunnel) Kind() string { return KindWebSocket }

// metaFrom describes a stream that the agent of gateway source opened
// toward the cloud, connected from remote. The client address is the
// agent's own as the cloud saw it: whatever ClientAddr the agent put in
// its Initiator is ignored, since an agent could claim any address.
func metaFrom(source string, remote netip.AddrPort, init tunnel.Initiator) tunnel.Meta {
	m := tunnel.Meta{Gateway: init.Gatename, Source: source, Client: remote}
	ip, _ := netip.ParseAddr(init.Ip) // validated by the wire decoder; zero when absent
	m.Dest = netip.AddrPortFrom(ip.Unmap(), init.Port)
	return m
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// addrPort parses an HTTP request's RemoteAddr (or any net.Addr string).
func addrPort(s string) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(s)
	return unmap(ap)
}

var (
	_ Tunnel      = (*WebSocketTunnel)(nil)
	_ EarlyOpener = (*WebSocketTunnel)(nil)
)
