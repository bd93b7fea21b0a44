// Package tunnel is Gatehouse's tunnel protocol: the wire messages that a
// gateway agent and the cloud exchange over one WebSocket, and a Session that
// multiplexes many byte streams (each a net.Conn) over that WebSocket with
// per-stream credit flow control, half-close and keepalives.
//
// Each WebSocket message is one type byte followed by a msgpack map (see
// wire.go and const.go for the layout). Either side may open streams: the cloud
// opens one per ingress TLS connection toward the gateway, and an agent may
// open streams toward the cloud for agent-to-agent forwarding.
//
// The package knows nothing of Caddy, of the registry, of TLS or of HTTP
// beyond the WebSocket adapter. It does not decide who may connect (the
// authenticate callback of ServerHandshake does), nor where a stream goes (the
// application that accepts it does), and it never carries IP packets.
package tunnel
