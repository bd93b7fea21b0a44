// Package gatehousedns is the Caddy module `dns.providers.gatehouse`: the
// Gatehouse libdns provider (modules/dnsprovider) as a Caddy DNS provider,
// so that `tls { dns gatehouse … }` solves ACME DNS-01 challenges through
// a Gatehouse registration API.
//
// A gateway that runs Caddy configures it with its own token; the cloud,
// for its own wildcard certificate, with the operator token of the
// `gatehouse` app. The module is a thin adapter: the provider does the work.
package gatehousedns

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/dnsprovider"
)

func init() {
	caddy.RegisterModule(Provider{})
}

// Provider sets and deletes DNS records through the Gatehouse /v1/records
// API. Its JSON fields are those of dnsprovider.Provider:
//
//   - `endpoint`: the base URL of the API, for example
//     https://api.box.example.org;
//   - `token`: the gateway's token (or the cloud's operator token), sent
//     as a bearer token.
//
// Both accept placeholders such as {env.GATEHOUSE_TOKEN}, resolved when the
// module is provisioned, so that secrets stay out of the saved config.
type Provider struct{ *dnsprovider.Provider }

// CaddyModule returns the Caddy module information.
func (Provider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "dns.providers.gatehouse",
		New: func() caddy.Module { return &Provider{new(dnsprovider.Provider)} },
	}
}

// Provision resolves placeholders in the endpoint and the token.
func (p *Provider) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	p.Endpoint = repl.ReplaceAll(p.Endpoint, "")
	p.Token = repl.ReplaceAll(p.Token, "")
	if p.Endpoint == "" || p.Token == "" {
		// Not an error: `caddy adapt --validate` provisions configs whose
		// environment is not set, and the provider refuses to send
		// anything without both (dnsprovider.ErrConfig) when a challenge
		// is due, which names the problem then.
		ctx.Logger().Warn("gatehouse dns provider: endpoint or token is empty; DNS challenges will fail",
			zap.Bool("endpoint_set", p.Endpoint != ""), zap.Bool("token_set", p.Token != ""))
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Module          = (*Provider)(nil)
	_ caddy.Provisioner     = (*Provider)(nil)
	_ certmagic.DNSProvider = (*Provider)(nil)
	_ libdns.RecordGetter   = (*Provider)(nil)
	_ libdns.RecordAppender = (*Provider)(nil)
	_ libdns.RecordSetter   = (*Provider)(nil)
	_ libdns.RecordDeleter  = (*Provider)(nil)
	_ libdns.ZoneLister     = (*Provider)(nil)
)
