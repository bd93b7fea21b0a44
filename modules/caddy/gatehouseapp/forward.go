package gatehouseapp

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/gatehouse-project/gatehouse/modules/forward"
)

// ForwardConfig says which gateways may reach services behind which
// others (agent-to-agent forwarding). Without it, every forward is refused.
type ForwardConfig struct {
	// Rules allow gateway From to reach gateway To on Ports (empty: any);
	// "*" matches any gateway. No matching rule denies.
	Rules forward.Rules `json:"rules,omitempty"`
	// OpenTimeout bounds the wait for the target agent's answer (default 10s).
	OpenTimeout caddy.Duration `json:"open_timeout,omitempty"`
}

// unmarshalCaddyfile reads
//
//	forward {
//		allow <from> <to> [<port>...]
//		open_timeout <duration>
//	}
func (f *ForwardConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "allow":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("allow: want <from> <to> [<port>...]")
			}
			r := forward.Rule{From: args[0], To: args[1]}
			for _, p := range args[2:] {
				n, err := strconv.ParseUint(p, 10, 16)
				if err != nil || n == 0 {
					return d.Errf("allow: %q is not a port", p)
				}
				r.Ports = append(r.Ports, uint16(n))
			}
			f.Rules = append(f.Rules, r)
		case "open_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			f.OpenTimeout = dur
		default:
			return d.Errf("unrecognized forward option %q", key)
		}
	}
	return nil
}
