package gatehouseapp

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// TunnelHandler serves the agents' WebSocket upgrade on /v1/tunnel.
func (a *App) TunnelHandler() http.Handler {
	cfg := a.tunnelConfig()
	n := a.node
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Hub().ServeTunnel(w, r, n.AuthenticateTunnel, cfg)
	})
}

// tunnelConfig is the tunnel section, or the defaults: the agents'
// sessions and the cluster's link sessions use it.
func (a *App) tunnelConfig() tunnel.Config {
	if a.Tunnel != nil {
		return *a.Tunnel
	}
	return tunnel.Config{}
}

// unmarshalTunnel reads the `tunnel { … }` block into the library's config.
func unmarshalTunnel(d *caddyfile.Dispenser, t *tunnel.Config) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "keepalive_interval", "keepalive_timeout", "write_timeout", "handshake_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			*map[string]*time.Duration{"keepalive_interval": &t.KeepAliveInterval, "keepalive_timeout": &t.KeepAliveTimeout,
				"write_timeout": &t.WriteTimeout, "handshake_timeout": &t.HandshakeTimeout}[key] = time.Duration(dur)
		case "stream_window", "max_stream_window":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if uint64(n) > uint64(^uint32(0)) {
				return d.Errf("%s: %d is too large", key, n)
			}
			if key == "stream_window" {
				t.StreamWindow = uint32(n)
			} else {
				t.MaxStreamWindow = uint32(n)
			}
		case "accept_backlog":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			t.AcceptBacklog = n
		case "max_streams":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			t.MaxStreams = n
		default:
			return d.Errf("unrecognized tunnel option %q", key)
		}
	}
	return nil
}
