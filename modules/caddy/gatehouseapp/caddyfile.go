package gatehouseapp

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/gatehouse-project/gatehouse/modules/caddy/storagepostgres"
	"github.com/gatehouse-project/gatehouse/modules/caddy/storagesqlite"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("gatehouse", parseGlobalOption)
}

// parseGlobalOption turns the `gatehouse { … }` global option into the app's
// JSON config.
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "gatehouse", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens:
//
//	gatehouse {
//		zone         <zone>
//		storage      sqlite <path> | postgres <dsn>
//		expire_after <duration>
//		reserved     <name...>
//		max_records  <n>
//		operator_token <token>
//		token_seal_key <32 bytes, hex or base64>
//		rate_limit   subscribe|reclaim|email <every> <burst>
//		acmedns_register
//		domain_resolvers <host:port...>
//		domain_recheck_interval <duration>
//		custom_domains off
//		email {
//			smtp     <host:port>
//			username <user>
//			password <password>
//			from     <address>
//			tls      none|starttls|tls
//			api_url  <https://api.zone>
//			template verification_subject|verification_body|reclamation_subject|reclamation_body <file>
//		}
//		dns { … }
//		tunnel { … }
//		forward {
//			allow <from> <to> [<port>...]
//		}
//		cluster {
//			name             <node name>
//			public_addresses <ip...>
//			listen           <network address>
//			advertise        <host:port>
//			lease            <duration>
//			certificate      <cert file> <key file>
//			ca               <cluster CA file>
//			pki              <pki app CA id>   # instead of certificate and ca
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "zone":
			if !d.AllArgs(&a.Zone) {
				return d.ArgErr()
			}
		case "storage":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("storage: want sqlite <path> or postgres <dsn>")
			}
			switch args[0] {
			case "sqlite":
				a.StorageRaw = caddyconfig.JSONModuleObject(storagesqlite.SQLite{Path: args[1]}, "driver", "sqlite", nil)
			case "postgres":
				a.StorageRaw = caddyconfig.JSONModuleObject(storagepostgres.Postgres{DSN: args[1]}, "driver", "postgres", nil)
			default:
				return d.Errf("storage: unknown driver %q (sqlite or postgres)", args[0])
			}
		case "expire_after":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.ExpireAfter = dur
		case "reserved":
			a.Reserved = append(a.Reserved, d.RemainingArgs()...)
			if len(a.Reserved) == 0 {
				return d.ArgErr()
			}
		case "operator_token":
			if !d.AllArgs(&a.OperatorToken) {
				return d.ArgErr()
			}
		case "token_seal_key":
			if !d.AllArgs(&a.TokenSealKey) {
				return d.ArgErr()
			}
		case "max_records":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			a.MaxRecords = n
		case "rate_limit":
			if err := a.parseRateLimit(d); err != nil {
				return err
			}
		case "acmedns_register":
			if d.NextArg() {
				return d.ArgErr()
			}
			a.ACMEDNSRegister = true
		case "domain_resolvers":
			a.DomainResolvers = append(a.DomainResolvers, d.RemainingArgs()...)
			if len(a.DomainResolvers) == 0 {
				return d.ArgErr()
			}
		case "domain_recheck_interval":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.DomainRecheckInterval = dur
		case "custom_domains":
			var v string
			if !d.AllArgs(&v) || v != "off" {
				return d.Errf("custom_domains: only \"off\" is accepted (they are on by default)")
			}
			a.NoCustomDomains = true
		case "email":
			a.Email = new(EmailConfig)
			if err := a.Email.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "dns":
			a.DNS = new(DNSConfig)
			if err := a.DNS.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "forward":
			a.Forward = new(ForwardConfig)
			if err := a.Forward.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "cluster":
			a.Cluster = new(ClusterConfig)
			if err := a.Cluster.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "tunnel":
			a.Tunnel = new(tunnel.Config)
			if err := unmarshalTunnel(d, a.Tunnel); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized gatehouse option %q", d.Val())
		}
	}
	return nil
}

func (a *App) parseRateLimit(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) != 3 {
		return d.Errf("rate_limit: want <subscribe|reclaim|email> <every> <burst>")
	}
	every, err := caddy.ParseDuration(args[1])
	if err != nil {
		return d.Errf("rate_limit: %v", err)
	}
	burst, err := strconv.Atoi(args[2])
	if err != nil || burst < 1 {
		return d.Errf("rate_limit: burst must be a positive integer")
	}
	if a.RateLimits == nil {
		a.RateLimits = new(RateLimits)
	}
	rl := &RateLimit{Every: caddy.Duration(every), Burst: burst}
	switch args[0] {
	case "subscribe":
		a.RateLimits.Subscribe = rl
	case "reclaim":
		a.RateLimits.Reclaim = rl
	case "email":
		a.RateLimits.Email = rl
	default:
		return d.Errf("rate_limit: unknown endpoint group %q", args[0])
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	key := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("%s: %v", key, err)
	}
	if dur < 0 {
		return 0, d.Errf("negative duration %s", s)
	}
	return caddy.Duration(dur), nil
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, d.Errf("%q is not a non-negative integer", s)
	}
	return n, nil
}

var _ caddyfile.Unmarshaler = (*App)(nil)
