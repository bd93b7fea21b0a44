package gatehouseapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// TunnelConfig tunes the sessions agents open to /v1/tunnel.
type TunnelConfig struct {
	// KeepAliveInterval is how often the cloud pings an agent (default 10s).
	KeepAliveInterval caddy.Duration `json:"keepalive_interval,omitempty"`
	// KeepAliveTimeout closes a session silent for this long (default 30s).
	KeepAliveTimeout caddy.Duration `json:"keepalive_timeout,omitempty"`
	// StreamWindow is each stream's receive window in bytes (default 256 KiB).
	StreamWindow uint32 `json:"stream_window,omitempty"`
	// MaxStreams bounds the streams of one session (default 4096).
	MaxStreams int `json:"max_streams,omitempty"`
}

func (t *TunnelConfig) session() tunnel.Config {
	if t == nil {
		return tunnel.Config{}
	}
	return tunnel.Config{
		KeepAliveInterval: time.Duration(t.KeepAliveInterval), KeepAliveTimeout: time.Duration(t.KeepAliveTimeout),
		StreamWindow: t.StreamWindow, MaxStreams: t.MaxStreams,
	}
}

// TunnelHandler serves the agents' WebSocket upgrade on /v1/tunnel.
func (a *App) TunnelHandler() http.Handler {
	cfg := a.Tunnel.session()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hub.ServeTunnel(w, r, a.authenticateTunnel, cfg)
	})
}

// authenticateTunnel admits a session for name only with name's own token,
// so a gateway can never receive another gateway's traffic.
func (a *App) authenticateTunnel(ctx context.Context, name, key string) error {
	refuse := func(reason string) error { return &tunnel.RefusedError{Reason: reason} }
	g, err := a.registry.Authenticate(ctx, key)
	if errors.Is(err, registry.ErrNotFound) {
		return refuse("unknown token")
	}
	if errors.Is(err, registry.ErrDisabled) {
		return refuse("gateway disabled by the operator")
	}
	if err != nil {
		// Not a refusal: the agent only learns that authentication failed.
		return fmt.Errorf("registry unavailable: %w", err)
	}
	if g.Name != name {
		return refuse(fmt.Sprintf("token does not belong to %q", name))
	}
	if g.Expired {
		return refuse("gateway expired: ping to bring it back first")
	}
	return nil
}

func (t *TunnelConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "keepalive_interval", "keepalive_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if key == "keepalive_interval" {
				t.KeepAliveInterval = dur
			} else {
				t.KeepAliveTimeout = dur
			}
		case "stream_window":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			t.StreamWindow = uint32(n)
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
