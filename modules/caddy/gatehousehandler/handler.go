// Package gatehousehandler is the Caddy HTTP handler `gatehouse`: the
// registration API and the agent's tunnel endpoint, served from the state
// that the `gatehouse` app owns.
package gatehousehandler

import (
	"fmt"
	"net/http"
	"net/netip"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/caddy/gatehouseapp"
	"github.com/gatehouse-project/gatehouse/modules/regapi"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("gatehouse", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("gatehouse", httpcaddyfile.Before, "respond")
}

// Handler serves the registration API, or with mode "offline" the page for
// gateways without a live tunnel. Zone, store, limits and mail are the
// `gatehouse` app's.
type Handler struct {
	// Mode is "api" (the default: the registration API and the tunnel
	// endpoint) or "offline" (the "gateway offline" page, for a `*.ZONE`
	// site behind the gatehouse listener wrapper).
	Mode string `json:"mode,omitempty"`

	api     *regapi.API
	offline *offlinePage
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.gatehouse",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the gatehouse app and builds the API over its registry.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	appIface, err := ctx.App("gatehouse")
	if err != nil {
		return fmt.Errorf("gatehouse handler: the gatehouse app is not configured: %w", err)
	}
	app := appIface.(*gatehouseapp.App)
	switch h.Mode {
	case "", ModeAPI:
	case ModeOffline:
		h.offline = &offlinePage{app: app, logger: h.logger}
		return nil
	default:
		return fmt.Errorf("gatehouse handler: unknown mode %q (api or offline)", h.Mode)
	}
	limits := app.Limiters()
	h.api = regapi.New(app.Registry(), regapi.Config{
		Zone:            app.ZoneName(),
		ClientIP:        clientIP,
		Tunnel:          app.TunnelHandler(),
		SubscribeLimit:  limits.Subscribe,
		ReclaimLimit:    limits.Reclaim,
		EmailLimit:      limits.Email,
		Operator:        app.IsOperator,
		Nodes:           app.NodeLister(),
		ACMEDNSRegister: app.ACMEDNSRegister,
		Domains:         app.Domains(),
		OnError: func(r *http.Request, err error) {
			h.logger.Error("request failed", zap.String("uri", r.URL.Path), zap.Error(err))
		},
	})
	return nil
}

// clientIP is Caddy's view of the client address: the connection's peer,
// or a forwarding header's value when the peer is a configured trusted proxy.
func clientIP(r *http.Request) netip.Addr {
	if s, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		if ip, err := netip.ParseAddr(s); err == nil {
			return ip.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// ServeHTTP answers the API; it never calls next, as every path under it
// belongs to the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if h.offline != nil {
		h.offline.ServeHTTP(w, r)
		return nil
	}
	h.api.ServeHTTP(w, r)
	return nil
}

// UnmarshalCaddyfile parses `gatehouse [api|offline]` (no block).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		h.Mode = d.Val()
		if h.Mode != ModeAPI && h.Mode != ModeOffline {
			return d.Errf("unknown gatehouse mode %q (api or offline)", h.Mode)
		}
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("the gatehouse directive takes no options; configure the gatehouse global option")
	}
	return nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
