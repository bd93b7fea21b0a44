package gatehouseapp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/dnszone"
)

// DNSConfig is the zone's authoritative DNS service: where it listens,
// and the library's own zone config, embedded so that every setting of
// dnszone.Config (SOA timers, EDNS size, RRL prefixes, ...) is reachable
// from JSON. Its zone is the app's; durations in JSON are nanoseconds,
// as Caddy writes every duration.
type DNSConfig struct {
	// Listen are the addresses served, each "udp/HOST:PORT" or
	// "tcp/HOST:PORT" (Caddy network addresses, so reloads keep the sockets).
	Listen []string `json:"listen"`
	// TCPIdleTimeout closes a TCP connection that asks nothing more for
	// this long (default 5s).
	TCPIdleTimeout caddy.Duration `json:"tcp_idle_timeout,omitempty"`
	// TCPMaxConns and TCPMaxConnsPerClient bound the TCP connections per
	// listener, in all and per client (IPv4 address, IPv6 /64); a new
	// connection beyond a bound closes the least recently active one
	// (defaults 1024 and 16).
	TCPMaxConns          int `json:"tcp_max_conns,omitempty"`
	TCPMaxConnsPerClient int `json:"tcp_max_conns_per_client,omitempty"`
	dnszone.Config
}

// serverOptions are the listeners' bounds; they belong to the server, not
// to the zone's answers, so they sit beside dnszone.Config.
func (c *DNSConfig) serverOptions() dnszone.ServerOptions {
	return dnszone.ServerOptions{
		IdleTimeout:          time.Duration(c.TCPIdleTimeout),
		MaxTCPConns:          c.TCPMaxConns,
		MaxTCPConnsPerClient: c.TCPMaxConnsPerClient,
	}
}

func (c *DNSConfig) validate(zone string) error {
	if len(c.Listen) == 0 {
		return fmt.Errorf("gatehouse dns: at least one listen address is required")
	}
	if c.TCPIdleTimeout < 0 || c.TCPMaxConns < 0 || c.TCPMaxConnsPerClient < 0 {
		return fmt.Errorf("gatehouse dns: tcp_idle_timeout, tcp_max_conns and tcp_max_conns_per_client must not be negative")
	}
	for _, l := range c.Listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err != nil {
			return fmt.Errorf("gatehouse dns: listen %q: %w", l, err)
		}
		if na.Network != "udp" && na.Network != "tcp" && na.Network != "udp4" && na.Network != "udp6" && na.Network != "tcp4" && na.Network != "tcp6" {
			return fmt.Errorf("gatehouse dns: listen %q: network must be udp or tcp", l)
		}
	}
	zc := c.Config
	zc.Zone = zone
	return zc.Validate()
}

// startDNS opens the listeners through Caddy (so a reload reuses the
// sockets instead of failing to bind them again) and serves the zone.
func (a *App) startDNS(ctx context.Context) error {
	var pcs []net.PacketConn
	var lns []net.Listener
	closeAll := func() {
		for _, pc := range pcs {
			_ = pc.Close()
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	for _, l := range a.DNS.Listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err != nil {
			closeAll()
			return err
		}
		for port := range na.PortRangeSize() {
			c, err := na.Listen(ctx, port, net.ListenConfig{})
			if err != nil {
				closeAll()
				return fmt.Errorf("gatehouse dns: listen %s: %w", l, err)
			}
			switch c := c.(type) {
			case net.PacketConn:
				pcs = append(pcs, c)
			case net.Listener:
				lns = append(lns, c)
			default:
				closeAll()
				return fmt.Errorf("gatehouse dns: listen %s: unexpected %T", l, c)
			}
		}
	}
	a.dnsServer = dnszone.NewServer(a.node.DNSHandler(), pcs, lns, a.DNS.serverOptions())
	if err := a.dnsServer.Start(); err != nil {
		closeAll()
		return err
	}
	// Caddy's sockets wrap a *net.UDPConn (Unwrap); one that does not is
	// served one datagram per syscall, which the log makes visible.
	a.logger.Info("dns serving", zap.Int("udp", len(pcs)), zap.Int("udp_batched", a.dnsServer.BatchedUDP()), zap.Int("tcp", len(lns)))
	return nil
}

func (c *DNSConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	addrs := func(args []string) ([]netip.Addr, error) {
		out := make([]netip.Addr, 0, len(args))
		for _, s := range args {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, d.Errf("%q is not an IP address", s)
			}
			out = append(out, ip)
		}
		return out, nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		args := d.RemainingArgs()
		var err error
		switch key {
		case "listen":
			if len(args) == 0 {
				return d.ArgErr()
			}
			c.Listen = append(c.Listen, args...)
		case "nameserver":
			if len(args) == 0 {
				return d.ArgErr()
			}
			ns := dnszone.Nameserver{Name: args[0]}
			if ns.Addrs, err = addrs(args[1:]); err != nil {
				return err
			}
			c.Nameservers = append(c.Nameservers, ns)
		case "tunnel_address":
			ips, err := addrs(args)
			if err != nil || len(ips) == 0 {
				return orArgErr(d, err)
			}
			c.TunnelAddrs = append(c.TunnelAddrs, ips...)
		case "api_address":
			ips, err := addrs(args)
			if err != nil || len(ips) == 0 {
				return orArgErr(d, err)
			}
			c.APIAddrs = append(c.APIAddrs, ips...)
		case "apex_address":
			ips, err := addrs(args)
			if err != nil || len(ips) == 0 {
				return orArgErr(d, err)
			}
			c.ApexAddrs = append(c.ApexAddrs, ips...)
		case "host":
			if len(args) < 2 {
				return d.ArgErr()
			}
			h := dnszone.Host{Name: args[0]}
			if h.Addrs, err = addrs(args[1:]); err != nil {
				return err
			}
			c.Hosts = append(c.Hosts, h)
		case "caa":
			if len(args) != 3 {
				return d.Errf("caa: want <flag> <tag> <value>")
			}
			flag, err := strconv.ParseUint(args[0], 10, 8)
			if err != nil {
				return d.Errf("caa: flag %q: %v", args[0], err)
			}
			c.CAA = append(c.CAA, dnszone.CAA{Flag: uint8(flag), Tag: args[1], Value: args[2]})
		case "mx":
			if len(args) != 2 {
				return d.Errf("mx: want <preference> <host>")
			}
			pref, err := strconv.ParseUint(args[0], 10, 16)
			if err != nil {
				return d.Errf("mx: preference %q: %v", args[0], err)
			}
			c.MX = append(c.MX, dnszone.MX{Preference: uint16(pref), Host: args[1]})
		case "txt":
			if len(args) != 1 {
				return d.Errf("txt: want one quoted value")
			}
			c.TXT = append(c.TXT, args[0])
		case "contact", "soa_mname":
			if len(args) != 1 {
				return d.ArgErr()
			}
			*map[string]*string{"contact": &c.SOA.RName, "soa_mname": &c.SOA.MName}[key] = args[0]
		case "negative_ttl", "static_ttl", "gateway_ttl", "challenge_ttl", "steered_ttl", "soa_refresh", "soa_retry", "soa_expire":
			if len(args) != 1 {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur < 0 {
				return d.Errf("%s: bad duration %q", key, args[0])
			}
			*map[string]*time.Duration{"negative_ttl": &c.SOA.Minimum, "static_ttl": &c.TTL.Static,
				"gateway_ttl": &c.TTL.Gateway, "challenge_ttl": &c.TTL.Challenge, "steered_ttl": &c.TTL.Steered,
				"soa_refresh": &c.SOA.Refresh, "soa_retry": &c.SOA.Retry, "soa_expire": &c.SOA.Expire}[key] = dur
		case "edns_buf_size":
			if len(args) != 1 {
				return d.ArgErr()
			}
			if c.EDNSBufSize, err = strconv.Atoi(args[0]); err != nil {
				return d.Errf("edns_buf_size: %q is not an integer", args[0])
			}
		case "transfer_allow":
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, s := range args {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					ip, ierr := netip.ParseAddr(s)
					if ierr != nil {
						return d.Errf("transfer_allow: %q is not a prefix or address", s)
					}
					p = netip.PrefixFrom(ip, ip.BitLen())
				}
				c.TransferAllow = append(c.TransferAllow, p)
			}
		case "rrl":
			if err := c.parseRRL(d, args); err != nil {
				return err
			}
		case "tcp_idle_timeout":
			if len(args) != 1 {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("tcp_idle_timeout: want a positive duration, not %q", args[0])
			}
			c.TCPIdleTimeout = caddy.Duration(dur)
		case "tcp_max_conns", "tcp_max_conns_per_client":
			if len(args) != 1 {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return d.Errf("%s: want a positive integer, not %q", key, args[0])
			}
			*map[string]*int{"tcp_max_conns": &c.TCPMaxConns, "tcp_max_conns_per_client": &c.TCPMaxConnsPerClient}[key] = n
		default:
			return d.Errf("unrecognized dns option %q", key)
		}
	}
	return nil
}

// parseRRL reads `rrl off`, `rrl <responses/s> [<window> [<slip>]]`,
// `rrl prefix <ipv4 bits> <ipv6 bits>`, `rrl max_prefixes <n>` and
// `rrl exempt <prefix...>`.
func (c *DNSConfig) parseRRL(d *caddyfile.Dispenser, args []string) error {
	if len(args) == 1 && strings.EqualFold(args[0], "off") {
		c.RRL.Disabled = true
		return nil
	}
	if len(args) > 0 {
		switch args[0] {
		case "prefix":
			if len(args) != 3 {
				return d.Errf("rrl prefix: want <ipv4 bits> <ipv6 bits>")
			}
			v4, err4 := strconv.Atoi(args[1])
			v6, err6 := strconv.Atoi(args[2])
			if err4 != nil || err6 != nil {
				return d.Errf("rrl prefix: bits must be integers")
			}
			c.RRL.IPv4PrefixLen, c.RRL.IPv6PrefixLen = v4, v6
			return nil
		case "max_prefixes":
			if len(args) != 2 {
				return d.Errf("rrl max_prefixes: want <n>")
			}
			n, err := strconv.Atoi(args[1])
			if err != nil {
				return d.Errf("rrl max_prefixes: %q is not an integer", args[1])
			}
			c.RRL.MaxPrefixes = n
			return nil
		case "exempt":
			if len(args) < 2 {
				return d.Errf("rrl exempt: want <prefix...>")
			}
			for _, a := range args[1:] {
				p, err := netip.ParsePrefix(a)
				if err != nil {
					return d.Errf("rrl exempt: %q is not a prefix", a)
				}
				c.RRL.Exempt = append(c.RRL.Exempt, p)
			}
			return nil
		}
	}
	if len(args) < 1 || len(args) > 3 {
		return d.Errf("rrl: want off, or <responses_per_second> [<window> [<slip>]]")
	}
	rps, err := strconv.ParseFloat(args[0], 64)
	if err != nil || rps <= 0 {
		return d.Errf("rrl: %q is not a positive rate", args[0])
	}
	c.RRL.ResponsesPerSecond = rps
	if len(args) > 1 {
		w, err := caddy.ParseDuration(args[1])
		if err != nil || w <= 0 {
			return d.Errf("rrl: window %q: want a positive duration", args[1])
		}
		c.RRL.Window = w
	}
	if len(args) > 2 {
		if c.RRL.Slip, err = strconv.Atoi(args[2]); err != nil {
			return d.Errf("rrl: slip %q is not an integer", args[2])
		}
	}
	return nil
}

func orArgErr(d *caddyfile.Dispenser, err error) error {
	if err != nil {
		return err
	}
	return d.ArgErr()
}
