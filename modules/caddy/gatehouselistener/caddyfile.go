package gatehouselistener

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens:
//
//	gatehouse {
//		peek_timeout            <duration>
//		max_hello_bytes         <n>
//		open_timeout            <duration>
//		max_streams_per_gateway <n>
//		max_streams_per_client  <n>
//		client_prefix           <ipv4 bits> <ipv6 bits>
//		offline_page            on|off
//		no_sni                  alert|caddy
//		log_interval            <duration>
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
		case "peek_timeout", "open_timeout", "log_interval":
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
			switch key {
			case "peek_timeout":
				lw.PeekTimeout = caddy.Duration(dur)
			case "open_timeout":
				lw.OpenTimeout = caddy.Duration(dur)
			default:
				lw.LogInterval = caddy.Duration(dur)
			}
		case "max_hello_bytes", "max_streams_per_gateway", "max_streams_per_client":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return d.Errf("%s: %q is not a positive integer", key, s)
			}
			switch key {
			case "max_hello_bytes":
				lw.MaxHelloBytes = n
			case "max_streams_per_gateway":
				lw.MaxStreamsPerGateway = n
			default:
				lw.MaxStreamsPerClient = n
			}
		case "client_prefix":
			var s4, s6 string
			if !d.AllArgs(&s4, &s6) {
				return d.ArgErr()
			}
			v4, err4 := strconv.Atoi(s4)
			v6, err6 := strconv.Atoi(s6)
			if err4 != nil || v4 < 1 || v4 > 32 || err6 != nil || v6 < 1 || v6 > 128 {
				return d.Errf("client_prefix: want IPv4 bits (1-32) and IPv6 bits (1-128), got %q %q", s4, s6)
			}
			lw.ClientPrefixV4, lw.ClientPrefixV6 = v4, v6
		case "offline_page":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			switch s {
			case "on":
				lw.NoOfflinePage = false
			case "off":
				lw.NoOfflinePage = true
			default:
				return d.Errf("offline_page: %q is neither on nor off", s)
			}
		case "no_sni":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			switch s {
			case "alert":
				lw.NoSNIToCaddy = false
			case "caddy":
				lw.NoSNIToCaddy = true
			default:
				return d.Errf("no_sni: %q is neither alert nor caddy", s)
			}
		default:
			return d.Errf("unrecognized gatehouse listener option %q", key)
		}
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
