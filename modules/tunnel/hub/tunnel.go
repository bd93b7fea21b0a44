package hub

import (
	"context"
	"net"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// Tunnel is one live way to a gateway: an agent's WebSocket session, a
// PageKite kite, or a relay to another cloud node that holds the
// gateway's tunnel. The hub maps each gateway name to one Tunnel; ingress,
// the offline page and forwarding reach gateways only through it, so a new
// kind of tunnel means implementing this interface and nothing else.
type Tunnel interface {
	// Open opens a stream to the gateway described by m and waits until
	// the gateway accepts it (or refuses it, or ctx ends). A refusal is a
	// *tunnel.RefusedError carrying the gateway's reason.
	Open(ctx context.Context, m tunnel.Meta) (Stream, error)
	// Done is closed when the tunnel has ended; Err then says why.
	Done() <-chan struct{}
	// Err is nil while the tunnel is live.
	Err() error
	// CloseWithReason ends the tunnel and its streams, telling the
	// gateway why where its protocol can carry a reason.
	CloseWithReason(reason string) error
	// Kind names the kind of tunnel for logs and metrics ("websocket",
	// "pagekite", "relay").
	Kind() string
}

// EarlyOpener is a Tunnel that can send a stream's first bytes along with
// its opening, before the gateway accepts it (saving a round trip through
// the tunnel). A refusal drops them, and OpenEarly returns it as Open does.
type EarlyOpener interface {
	OpenEarly(ctx context.Context, m tunnel.Meta, early []byte) (Stream, error)
}

// Stream is one connection through a Tunnel. CloseWrite half-closes it:
// the gateway reads EOF and may still send.
type Stream interface {
	net.Conn
	CloseWrite() error
}
