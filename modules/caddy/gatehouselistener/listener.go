// Package gatehouselistener is the Caddy listener wrapper
// `caddy.listeners.gatehouse`, the cloud's tunnel frontend. Placed before
// `tls` in a server's listener_wrappers, it routes each connection with
// modules/ingress: a connection whose server name is a gateway's with a
// live tunnel goes down the tunnel as it is (or is closed, never handed to
// Caddy); the cloud's own sites, an offline gateway's NAME.ZONE (for the
// offline page) and plain HTTP go on, replayed, to Caddy's TLS and HTTP
// server. When the app runs PageKite, a kite's plain-text request goes to
// its PageKite frontend.
//
// It is an adapter: the routing is modules/ingress, the sessions are the
// `gatehouse` app's hub (modules/tunnel/hub). It holds config, logger and
// metrics registration only.
package gatehouselistener

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-project/gatehouse/modules/caddy/gatehouseapp"
	"github.com/gatehouse-project/gatehouse/modules/ingress"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func init() {
	caddy.RegisterModule(ListenerWrapper{})
}

// DefaultOpenTimeout bounds the wait for the agent to accept a stream.
const DefaultOpenTimeout = ingress.DefaultOpenTimeout

// ListenerWrapper routes TLS connections whose server name is a gateway
// with a live tunnel down that tunnel, and hands the connections that name
// no live gateway to the wrapped server. It must come before `tls` in
// listener_wrappers, since it needs the raw ClientHello.
type ListenerWrapper struct {
	// PeekTimeout bounds the wait for a connection's ClientHello (default
	// 10s). A client that sends no complete ClientHello in time is
	// disconnected.
	PeekTimeout caddy.Duration `json:"peek_timeout,omitempty"`
	// MaxHelloBytes bounds the bytes read to find the ClientHello (default
	// 16384). A larger ClientHello is closed with a TLS alert: its server
	// name cannot be read, and it may name a live gateway.
	MaxHelloBytes int `json:"max_hello_bytes,omitempty"`
	// OpenTimeout bounds the wait for the gateway's agent to accept the
	// stream (default 10s). A live gateway that does not answer in time,
	// or refuses, gets the connection closed with a TLS alert.
	OpenTimeout caddy.Duration `json:"open_timeout,omitempty"`
	// MaxStreamsPerGateway bounds the concurrent ingress streams of one
	// gateway (default 2048); MaxStreamsPerClient those of one client
	// prefix to one gateway (default 1024). Connections over either are
	// closed with a TLS alert.
	MaxStreamsPerGateway int `json:"max_streams_per_gateway,omitempty"`
	MaxStreamsPerClient  int `json:"max_streams_per_client,omitempty"`
	// ClientPrefixV4 and ClientPrefixV6 are the prefix lengths that make
	// one client (default 24 and 64).
	ClientPrefixV4 int `json:"client_prefix_v4,omitempty"`
	ClientPrefixV6 int `json:"client_prefix_v6,omitempty"`
	// NoOfflinePage closes connections for a gateway without a live
	// tunnel with a TLS alert instead of handing them to Caddy's offline
	// page, so the cloud never receives an offline gateway's visitor's
	// request.
	NoOfflinePage bool `json:"no_offline_page,omitempty"`
	// NoSNIToCaddy hands connections without a server name to Caddy (for
	// a server with default_sni) instead of an unrecognized_name alert.
	NoSNIToCaddy bool `json:"no_sni_to_caddy,omitempty"`
	// LogInterval spaces the log lines of refused connections: at most
	// one per reason per interval (default 10s); the counter
	// gatehouse_ingress_refused_total has them all.
	LogInterval caddy.Duration `json:"log_interval,omitempty"`

	router *ingress.Router
}

// CaddyModule returns the Caddy module information.
func (ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.gatehouse",
		New: func() caddy.Module { return new(ListenerWrapper) },
	}
}

// Provision finds the gatehouse app, whose hub holds the live sessions and
// whose zone says which server names are gateways, and builds the router.
func (lw *ListenerWrapper) Provision(ctx caddy.Context) error {
	if err := lw.Validate(); err != nil {
		return err
	}
	appIface, err := ctx.App("gatehouse")
	if err != nil {
		return fmt.Errorf("gatehouse listener: the gatehouse app is not configured: %w", err)
	}
	app, ok := appIface.(*gatehouseapp.App)
	if !ok {
		return fmt.Errorf("gatehouse listener: app gatehouse is a %T", appIface)
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	cfg := lw.config(app.ZoneName(), app.GatewayName, app.Tunnels())
	cfg.Logger = ctx.Logger()
	cfg.Domain = app.DomainGateway
	// Kites share the port when the app runs PageKite (a token_seal_key
	// is set); a nil server must stay a nil interface.
	if kites := app.Node().Kites(); kites != nil {
		cfg.Kites = kites
	}
	lw.router, err = ingress.New(cfg)
	if err != nil {
		return fmt.Errorf("gatehouse listener: %w", err)
	}
	return nil
}

// config is the router's configuration from the wrapper's options.
func (lw *ListenerWrapper) config(zone string, gateway func(string) (string, bool), tunnels ingress.Tunnels) ingress.Config {
	return ingress.Config{
		Zone:                 zone,
		Gateway:              gateway,
		Tunnels:              tunnels,
		PeekTimeout:          time.Duration(lw.PeekTimeout),
		MaxHelloBytes:        lw.MaxHelloBytes,
		OpenTimeout:          time.Duration(lw.OpenTimeout),
		MaxStreamsPerGateway: lw.MaxStreamsPerGateway,
		MaxStreamsPerClient:  lw.MaxStreamsPerClient,
		ClientPrefixV4:       lw.ClientPrefixV4,
		ClientPrefixV6:       lw.ClientPrefixV6,
		NoOfflinePage:        lw.NoOfflinePage,
		NoSNIToServer:        lw.NoSNIToCaddy,
		LogInterval:          time.Duration(lw.LogInterval),
		Metrics:              defaultMetrics,
	}
}

// Validate checks the options.
func (lw *ListenerWrapper) Validate() error {
	switch {
	case lw.PeekTimeout < 0:
		return errors.New("gatehouse listener: peek_timeout must not be negative")
	case lw.OpenTimeout < 0:
		return errors.New("gatehouse listener: open_timeout must not be negative")
	case lw.LogInterval < 0:
		return errors.New("gatehouse listener: log_interval must not be negative")
	case lw.MaxHelloBytes < 0:
		return errors.New("gatehouse listener: max_hello_bytes must not be negative")
	case lw.MaxHelloBytes > 0 && lw.MaxHelloBytes < 512:
		// A ClientHello alone takes a few hundred bytes.
		return errors.New("gatehouse listener: max_hello_bytes below 512 would refuse real ClientHellos")
	}
	// The rest is the router's own check, with stand-ins for what
	// Provision brings.
	cfg := lw.config("zone.invalid", func(string) (string, bool) { return "", false }, noTunnels{})
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("gatehouse listener: %w", err)
	}
	return nil
}

// noTunnels stands in for the hub when Validate checks the options
// before Provision has found the app.
type noTunnels struct{}

func (noTunnels) Lookup(string) (hub.Tunnel, bool) { return nil, false }

// WrapListener returns a listener that routes ln's connections. It starts
// the goroutine that accepts from ln; closing the returned listener stops
// it. Every listener of this config shares the router's stream budgets.
func (lw *ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	return ingress.NewListener(ln, lw.router)
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*ListenerWrapper)(nil)
	_ caddy.Validator       = (*ListenerWrapper)(nil)
	_ caddy.ListenerWrapper = (*ListenerWrapper)(nil)
)
