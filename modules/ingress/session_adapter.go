package ingress

import (
	"context"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// TEMPORARY, delete this file when branch core lands (its
// *hub.Hub.Lookup returns a hub.Tunnel, so *hub.Hub is a Tunnels itself):
// SessionTunnels adapts today's hub, whose Lookup returns a
// *tunnel.Session, as SessionTunnels(h.Lookup).
type SessionTunnels func(name string) (*tunnel.Session, bool)

// Lookup implements Tunnels.
func (s SessionTunnels) Lookup(name string) (hub.Tunnel, bool) {
	sess, ok := s(name)
	if !ok {
		return nil, false
	}
	return sessionTunnel{sess}, true
}

// sessionTunnel is a *tunnel.Session as a hub.Tunnel (TEMPORARY, see
// SessionTunnels).
type sessionTunnel struct{ *tunnel.Session }

func (s sessionTunnel) Open(ctx context.Context, m tunnel.Meta) (hub.Stream, error) {
	init := tunnel.Initiator{Gatename: m.Gateway}
	if m.Client.IsValid() {
		init.ClientAddr = m.Client.String()
	}
	st, err := s.Session.Open(ctx, init)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (sessionTunnel) Kind() string { return "websocket" }
