package gatehousedns

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the provider from Caddyfile tokens, in the
// block form or, as caddy-dns providers do, with the credential inline:
//
//	dns gatehouse {
//		endpoint <url>
//		token    <token>
//	}
//
//	dns gatehouse <token> {
//		endpoint <url>
//	}
//
// Both settings are required; placeholders are kept for Provision.
func (p *Provider) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the provider name
	if d.NextArg() {
		p.Token = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		var val string
		if !d.AllArgs(&val) {
			return d.ArgErr()
		}
		switch key {
		case "endpoint":
			if p.Endpoint != "" {
				return d.Err("endpoint already set")
			}
			p.Endpoint = val
		case "token":
			if p.Token != "" {
				return d.Err("token already set")
			}
			p.Token = val
		default:
			return d.Errf("unrecognized gatehouse dns option %q", key)
		}
	}
	if p.Endpoint == "" {
		return d.Err("gatehouse dns: endpoint is required (the API's base URL)")
	}
	if p.Token == "" {
		return d.Err("gatehouse dns: token is required")
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Provider)(nil)
