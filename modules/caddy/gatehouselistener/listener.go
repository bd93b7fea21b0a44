// Package gatehouselistener is the Caddy listener wrapper
// `caddy.listeners.gatehouse`, the cloud's tunnel frontend. Placed before
// `tls` in a server's listener_wrappers, it reads the ClientHello of each
// connection: when the server name is a gateway's (NAME.ZONE or a name
// below it) and that gateway has a live tunnel session, the connection goes
// down the tunnel as it is, bytes untouched, so TLS stays end to end and
// the cloud never sees the gateway's plaintext. Every other connection
// (no SNI, the cloud's own sites, a gateway without a live tunnel, a
// gateway that refused the stream, plain HTTP) goes on, replayed, to
// Caddy's own TLS and HTTP server, which serves the API and the "gateway
// offline" page.
//
// It is an adapter: the ClientHello reader is modules/clienthello, the
// sessions are the `gatehouse` app's hub (modules/tunnel/hub). It does not
// authenticate agents, terminate TLS, nor serve HTTP.
package gatehouselistener

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/caddy/gatehouseapp"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

func init() {
	caddy.RegisterModule(ListenerWrapper{})
}

// Defaults of the options.
const (
	// DefaultOpenTimeout bounds the wait for the agent to accept a stream.
	// The agent dials its upstream before it answers, so this covers a
	// slow local connect too; past it the client gets the offline page.
	DefaultOpenTimeout = 10 * time.Second
)

// ListenerWrapper routes TLS connections whose server name is a gateway
// with a live tunnel down that tunnel, and hands every other connection to
// the wrapped server. It must come before `tls` in listener_wrappers, since
// it needs the raw ClientHello.
type ListenerWrapper struct {
	// PeekTimeout bounds the wait for a connection's ClientHello (default
	// 10s). A client that sends no complete ClientHello in time is
	// disconnected.
	PeekTimeout caddy.Duration `json:"peek_timeout,omitempty"`
	// MaxHelloBytes bounds the bytes read to find the ClientHello (default
	// 16384). A larger ClientHello goes to Caddy's own TLS server.
	MaxHelloBytes int `json:"max_hello_bytes,omitempty"`
	// OpenTimeout bounds the wait for the gateway's agent to accept the
	// stream (default 10s). A gateway that does not answer in time is
	// treated as offline.
	OpenTimeout caddy.Duration `json:"open_timeout,omitempty"`

	router  *router
	logger  *zap.Logger
	metrics *metrics
}

// CaddyModule returns the Caddy module information.
func (ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.gatehouse",
		New: func() caddy.Module { return new(ListenerWrapper) },
	}
}

// Provision finds the gatehouse app, whose hub holds the live sessions and
// whose zone says which server names are gateways.
func (lw *ListenerWrapper) Provision(ctx caddy.Context) error {
	lw.logger = ctx.Logger()
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
	h := app.Hub()
	lw.router = &router{
		gateway: app.GatewayName,
		lookup:  h.Lookup,
	}
	lw.metrics, err = registerMetrics(ctx.GetMetricsRegistry())
	return err
}

// Validate checks the options.
func (lw *ListenerWrapper) Validate() error {
	switch {
	case lw.PeekTimeout < 0:
		return errors.New("gatehouse listener: peek_timeout must not be negative")
	case lw.OpenTimeout < 0:
		return errors.New("gatehouse listener: open_timeout must not be negative")
	case lw.MaxHelloBytes < 0:
		return errors.New("gatehouse listener: max_hello_bytes must not be negative")
	case lw.MaxHelloBytes > 0 && lw.MaxHelloBytes < 512:
		// A ClientHello alone takes a few hundred bytes.
		return errors.New("gatehouse listener: max_hello_bytes below 512 would refuse real ClientHellos")
	}
	return nil
}

// WrapListener returns a listener that routes ln's connections. It starts
// the goroutine that accepts from ln; closing the returned listener stops
// it.
func (lw *ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	r := *lw.router
	r.peekTimeout = time.Duration(lw.PeekTimeout)
	r.maxHello = lw.MaxHelloBytes
	r.openTimeout = time.Duration(lw.OpenTimeout)
	if r.openTimeout == 0 {
		r.openTimeout = DefaultOpenTimeout
	}
	r.logger = lw.logger
	r.metrics = lw.metrics
	return newListener(ln, &r)
}

// router decides where a connection goes. Its functions come from the app
// in production and from fakes in tests.
type router struct {
	// gateway maps a server name to the gateway it belongs to.
	gateway func(serverName string) (string, bool)
	// lookup returns the gateway's live session.
	lookup func(name string) (hub.Tunnel, bool)

	// peekTimeout and maxHello bound clienthello.Peek (its defaults when
	// zero); openTimeout bounds Session.Open.
	peekTimeout time.Duration
	maxHello    int
	openTimeout time.Duration
	logger      *zap.Logger
	metrics     *metrics
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*ListenerWrapper)(nil)
	_ caddy.Validator       = (*ListenerWrapper)(nil)
	_ caddy.ListenerWrapper = (*ListenerWrapper)(nil)
)
