package gatehouselistener

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens:
//
//	gatehouse {
//		peek_timeout    <duration>
//		max_hello_bytes <n>
//		open_timeout    <duration>
//	}
//
// The block is optional.
func (lw *ListenerWrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch key := d.Val(); key {
		case "peek_timeout", "open_timeout":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("%s: %v", key, err)
			}
			if dur <= 0 {
				return d.Errf("%s must be positive", key)
			}
			if key == "peek_timeout" {
				lw.PeekTimeout = caddy.Duration(dur)
			} else {
				lw.OpenTimeout = caddy.Duration(dur)
			}
		case "max_hello_bytes":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return d.Errf("max_hello_bytes: %q is not a positive integer", s)
			}
			lw.MaxHelloBytes = n
		default:
			return d.Errf("unrecognized gatehouse listener option %q", key)
		}
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
