package dnszone

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Config describes the zone and how it is served. Zero values take the
// defaults named on each field; Validate checks a Config as NewHandler will
// use it (defaults applied).
type Config struct {
	// Zone is the zone Gatehouse is authoritative for, e.g.
	// "box.example.org". Case and a trailing dot do not matter.
	Zone string `json:"zone"`

	// SOA holds the zone's SOA parameters.
	SOA SOA `json:"soa,omitempty"`

	// Nameservers are the apex NS records, at least one. A nameserver whose
	// name is inside the zone must have addresses: they answer its A/AAAA
	// queries and go as glue in the additional section of NS answers.
	Nameservers []Nameserver `json:"nameservers"`

	// ApexAddrs, when set, answer A/AAAA queries for the zone apex.
	ApexAddrs []netip.Addr `json:"apex_addrs,omitempty"`
	// CAA records of the apex, e.g. {0, "issue", "letsencrypt.org"}.
	CAA []CAA `json:"caa,omitempty"`
	// MX records of the apex.
	MX []MX `json:"mx,omitempty"`
	// TXT records of the apex, one value each (values longer than 255 bytes
	// are split into several character-strings).
	TXT []string `json:"txt,omitempty"`

	// APIAddrs answer A/AAAA for api.ZONE. Default: TunnelAddrs, since the
	// registration API is served by the same Caddy that ends the tunnels;
	// then, with a Steering set, api.ZONE answers every live node.
	APIAddrs []netip.Addr `json:"api_addrs,omitempty"`
	// Hosts are extra static names with addresses, relative to the zone
	// ("www", "status.eu"). They must not collide with api, the apex or an
	// in-zone nameserver.
	Hosts []Host `json:"hosts,omitempty"`

	// TunnelAddrs answer A/AAAA for every gateway in tunnel mode (the
	// addresses of this cloud node). At least one is required.
	TunnelAddrs []netip.Addr `json:"tunnel_addrs"`

	// TTL holds the TTLs of the answers.
	TTL TTL `json:"ttl,omitempty"`

	// TransferAllow lists the client prefixes allowed to AXFR/IXFR the zone
	// over TCP. Empty: every transfer is refused.
	TransferAllow []netip.Prefix `json:"transfer_allow,omitempty"`

	// RRL configures response rate limiting on UDP.
	RRL RRL `json:"rrl,omitempty"`

	// EDNSBufSize is the UDP payload size advertised and never exceeded,
	// whatever larger size a client offers. Default 1232 (no IP
	// fragmentation on common paths, DNS flag day 2020); at least 512.
	EDNSBufSize int `json:"edns_buf_size,omitempty"`
}

// SOA holds the zone's SOA fields; the serial is not configured, it follows
// the Index.
type SOA struct {
	// MName is the primary nameserver. Default: the first nameserver.
	MName string `json:"mname,omitempty"`
	// RName is the zone's contact, as a domain ("hostmaster.example.org")
	// or an email address ("hostmaster@example.org"). Default:
	// hostmaster.ZONE.
	RName string `json:"rname,omitempty"`
	// Refresh, Retry and Expire are for secondaries. Defaults 2h, 1h, 14d.
	Refresh time.Duration `json:"refresh,omitempty"`
	Retry   time.Duration `json:"retry,omitempty"`
	Expire  time.Duration `json:"expire,omitempty"`
	// Minimum is the negative-caching TTL (RFC 2308), also the TTL of the
	// SOA in the authority section of NXDOMAIN and NODATA answers. Default
	// 60s, so that a name registered or brought back from expiry resolves
	// soon after someone asked for it.
	Minimum time.Duration `json:"minimum,omitempty"`
}

// Nameserver is one apex NS record and, when Name is inside the zone, its
// glue addresses.
type Nameserver struct {
	// Name is absolute ("ns1.box.example.org").
	Name  string       `json:"name"`
	Addrs []netip.Addr `json:"addrs,omitempty"`
}

// Host is a static name with addresses.
type Host struct {
	// Name is relative to the zone ("www").
	Name  string       `json:"name"`
	Addrs []netip.Addr `json:"addrs"`
}

// CAA is one apex CAA record (RFC 8659).
type CAA struct {
	Flag  uint8  `json:"flag,omitempty"`
	Tag   string `json:"tag"`
	Value string `json:"value"`
}

// MX is one apex MX record.
type MX struct {
	Preference uint16 `json:"preference"`
	// Host is absolute.
	Host string `json:"host"`
}

// TTL holds the answer TTLs. Each is rounded down to whole seconds.
type TTL struct {
	// Static is the TTL of the apex, nameserver, api and host records and of
	// the SOA in answers. Default 1h.
	Static time.Duration `json:"static,omitempty"`
	// Gateway is the TTL of NAME.ZONE and local.NAME.ZONE addresses, and of
	// gateway records stored without a TTL. Default 60s, because dynamic
	// addresses change and an expired name must stop resolving soon.
	Gateway time.Duration `json:"gateway,omitempty"`
	// Challenge caps the TTL of _acme-challenge TXT records, so that a
	// renewed challenge is seen by the CA. Default 60s.
	Challenge time.Duration `json:"challenge,omitempty"`
	// Steered is the TTL of every answer a Steering gives (tunnel-mode
	// names, api, NS and the nameservers' addresses), so that resolvers
	// leave a dead node soon after it leaves the cluster. Default 30s.
	Steered time.Duration `json:"steered,omitempty"`
}

// RRL configures response rate limiting (against reflection attacks) on
// UDP, per client prefix, with a token bucket per prefix. TCP is never
// limited: a spoofed source cannot complete a handshake.
type RRL struct {
	// Disabled turns rate limiting off.
	Disabled bool `json:"disabled,omitempty"`
	// ResponsesPerSecond is the sustained rate allowed per prefix.
	// Default 100: the limit applies to a whole prefix and all names, and
	// large resolvers share prefixes.
	ResponsesPerSecond float64 `json:"responses_per_second,omitempty"`
	// Window is how long a prefix may burst: the bucket holds
	// ResponsesPerSecond × Window responses. Default 2s.
	Window time.Duration `json:"window,omitempty"`
	// Slip: every Slip-th limited response is sent truncated (TC, no
	// records) instead of being dropped, so a real client behind a limited
	// prefix retries over TCP. 0 takes the default 2; -1 drops every
	// limited response; 1 truncates every one.
	Slip int `json:"slip,omitempty"`
	// IPv4PrefixLen and IPv6PrefixLen group clients. Defaults 24 and 56.
	IPv4PrefixLen int `json:"ipv4_prefix_len,omitempty"`
	IPv6PrefixLen int `json:"ipv6_prefix_len,omitempty"`
	// MaxPrefixes bounds the memory of the limiter (about 40 bytes a
	// prefix); past it, rested prefixes are evicted first. Default 100000.
	MaxPrefixes int `json:"max_prefixes,omitempty"`
	// Exempt lists client prefixes never limited (monitoring, known
	// resolvers).
	Exempt []netip.Prefix `json:"exempt,omitempty"`
}

// Defaults for the fields of Config.
const (
	DefaultEDNSBufSize   = 1232
	DefaultStaticTTL     = time.Hour
	DefaultGatewayTTL    = 60 * time.Second
	DefaultChallengeTTL  = 60 * time.Second
	DefaultSteeredTTL    = 30 * time.Second
	DefaultSOARefresh    = 2 * time.Hour
	DefaultSOARetry      = time.Hour
	DefaultSOAExpire     = 14 * 24 * time.Hour
	DefaultSOAMinimum    = 60 * time.Second
	DefaultRRLRate       = 100
	DefaultRRLWindow     = 2 * time.Second
	DefaultRRLSlip       = 2
	DefaultRRLIPv4Prefix = 24
	DefaultRRLIPv6Prefix = 56
	DefaultRRLMaxPrefix  = 100000
)

// ErrInvalidConfig wraps every error Validate returns.
var ErrInvalidConfig = errors.New("invalid dns zone config")

// withDefaults returns c with zero fields set to their defaults and names
// in canonical form (lower case, fully qualified). It never fails: Validate
// judges the result.
func (c Config) withDefaults() Config {
	// Copies: the caller's slices must not change under it.
	c.Nameservers = slices.Clone(c.Nameservers)
	c.MX = slices.Clone(c.MX)
	c.Zone = canonical(c.Zone)
	for i := range c.Nameservers {
		c.Nameservers[i].Name = canonical(c.Nameservers[i].Name)
	}
	if c.SOA.MName == "" && len(c.Nameservers) > 0 {
		c.SOA.MName = c.Nameservers[0].Name
	}
	c.SOA.MName = canonical(c.SOA.MName)
	if c.SOA.RName == "" {
		c.SOA.RName = "hostmaster." + c.Zone
	}
	c.SOA.RName = mailboxName(c.SOA.RName)
	setDuration(&c.SOA.Refresh, DefaultSOARefresh)
	setDuration(&c.SOA.Retry, DefaultSOARetry)
	setDuration(&c.SOA.Expire, DefaultSOAExpire)
	setDuration(&c.SOA.Minimum, DefaultSOAMinimum)
	setDuration(&c.TTL.Static, DefaultStaticTTL)
	setDuration(&c.TTL.Gateway, DefaultGatewayTTL)
	setDuration(&c.TTL.Challenge, DefaultChallengeTTL)
	setDuration(&c.TTL.Steered, DefaultSteeredTTL)
	if len(c.APIAddrs) == 0 {
		c.APIAddrs = c.TunnelAddrs
	}
	for i := range c.MX {
		c.MX[i].Host = canonical(c.MX[i].Host)
	}
	if c.EDNSBufSize == 0 {
		c.EDNSBufSize = DefaultEDNSBufSize
	}
	r := &c.RRL
	if r.ResponsesPerSecond == 0 {
		r.ResponsesPerSecond = DefaultRRLRate
	}
	setDuration(&r.Window, DefaultRRLWindow)
	if r.Slip == 0 {
		r.Slip = DefaultRRLSlip
	}
	if r.IPv4PrefixLen == 0 {
		r.IPv4PrefixLen = DefaultRRLIPv4Prefix
	}
	if r.IPv6PrefixLen == 0 {
		r.IPv6PrefixLen = DefaultRRLIPv6Prefix
	}
	if r.MaxPrefixes == 0 {
		r.MaxPrefixes = DefaultRRLMaxPrefix
	}
	return c
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Validate reports the first problem of c, with defaults applied, wrapped in
// ErrInvalidConfig.
func (c Config) Validate() error {
	if err := c.withDefaults().validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

func (c Config) validate() error {
	if c.Zone == "." || !validName(c.Zone) {
		return fmt.Errorf("zone %q is not a domain name", c.Zone)
	}
	if len(c.Nameservers) == 0 {
		return errors.New("at least one nameserver is required")
	}
	taken := map[string]string{"": "the apex", "api": "api"}
	for _, ns := range c.Nameservers {
		if !validName(ns.Name) || dns.CountLabel(ns.Name) < 2 {
			return fmt.Errorf("nameserver %q is not an absolute domain name", ns.Name)
		}
		if err := validAddrs("nameserver "+ns.Name, ns.Addrs); err != nil {
			return err
		}
		rel, in := relative(ns.Name, c.Zone)
		if !in {
			continue
		}
		if rel == "" {
			return fmt.Errorf("nameserver %q is the apex: give it a name below the zone", ns.Name)
		}
		if len(ns.Addrs) == 0 {
			return fmt.Errorf("nameserver %q is inside the zone and needs glue addresses", ns.Name)
		}
		if what, dup := taken[rel]; dup && what != "nameserver" {
			return fmt.Errorf("nameserver %q collides with %s", ns.Name, what)
		}
		taken[rel] = "nameserver"
	}
	if !validName(c.SOA.MName) {
		return fmt.Errorf("soa mname %q is not a domain name", c.SOA.MName)
	}
	if !validName(c.SOA.RName) {
		return fmt.Errorf("soa rname %q is not a mailbox", c.SOA.RName)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"soa refresh", c.SOA.Refresh}, {"soa retry", c.SOA.Retry}, {"soa expire", c.SOA.Expire},
		{"soa minimum", c.SOA.Minimum}, {"static ttl", c.TTL.Static}, {"gateway ttl", c.TTL.Gateway},
		{"challenge ttl", c.TTL.Challenge}, {"steered ttl", c.TTL.Steered},
	} {
		if d.d < time.Second || d.d > math.MaxInt32*time.Second {
			return fmt.Errorf("%s %v out of range [1s, 2^31-1 s]", d.name, d.d)
		}
	}
	if err := validAddrs("apex", c.ApexAddrs); err != nil {
		return err
	}
	if err := validAddrs("api", c.APIAddrs); err != nil {
		return err
	}
	if len(c.TunnelAddrs) == 0 {
		return errors.New("at least one tunnel address is required")
	}
	if err := validAddrs("tunnel", c.TunnelAddrs); err != nil {
		return err
	}
	for _, caa := range c.CAA {
		switch caa.Tag {
		case "issue", "issuewild", "iodef", "issuemail", "issuevmc":
		default:
			return fmt.Errorf("caa tag %q is not one of issue, issuewild, iodef, issuemail, issuevmc", caa.Tag)
		}
	}
	for _, mx := range c.MX {
		if !validName(mx.Host) {
			return fmt.Errorf("mx host %q is not a domain name", mx.Host)
		}
	}
	for _, h := range c.Hosts {
		rel := strings.ToLower(strings.TrimSuffix(h.Name, "."))
		if rel == "" || rel == "@" || strings.ContainsRune(rel, '\\') || !validName(rel+"."+c.Zone) {
			return fmt.Errorf("host %q is not a name relative to the zone", h.Name)
		}
		if len(h.Addrs) == 0 {
			return fmt.Errorf("host %q has no address", h.Name)
		}
		if err := validAddrs("host "+h.Name, h.Addrs); err != nil {
			return err
		}
		if what, dup := taken[rel]; dup {
			return fmt.Errorf("host %q collides with %s", h.Name, what)
		}
		taken[rel] = "host " + rel
	}
	for _, p := range c.TransferAllow {
		if !p.IsValid() {
			return errors.New("transfer_allow holds an invalid prefix")
		}
	}
	if c.EDNSBufSize < dns.MinMsgSize || c.EDNSBufSize > dns.MaxMsgSize {
		return fmt.Errorf("edns buffer size %d out of range [512, 65535]", c.EDNSBufSize)
	}
	r := c.RRL
	switch {
	case r.ResponsesPerSecond < 0 || math.IsNaN(r.ResponsesPerSecond) || math.IsInf(r.ResponsesPerSecond, 0):
		return fmt.Errorf("rrl responses per second %v must be positive", r.ResponsesPerSecond)
	case r.Window < time.Millisecond:
		return fmt.Errorf("rrl window %v is shorter than 1ms", r.Window)
	case r.Slip < -1:
		return fmt.Errorf("rrl slip %d must be -1 (never), or at least 1", r.Slip)
	case r.IPv4PrefixLen < 8 || r.IPv4PrefixLen > 32:
		return fmt.Errorf("rrl ipv4 prefix length %d out of range [8, 32]", r.IPv4PrefixLen)
	case r.IPv6PrefixLen < 16 || r.IPv6PrefixLen > 128:
		return fmt.Errorf("rrl ipv6 prefix length %d out of range [16, 128]", r.IPv6PrefixLen)
	case r.MaxPrefixes < 0:
		return fmt.Errorf("rrl max prefixes %d is negative", r.MaxPrefixes)
	}
	for _, p := range r.Exempt {
		if !p.IsValid() {
			return errors.New("rrl exempt holds an invalid prefix")
		}
	}
	return nil
}

// ReservedNames returns the labels directly below the zone that static
// names use (api, in-zone nameservers, hosts). The registry must refuse them
// as gateway names (registry.NewNames(extra)): static names shadow gateways.
func (c Config) ReservedNames() []string {
	c = c.withDefaults()
	seen := map[string]bool{"api": true}
	out := []string{"api"}
	add := func(rel string) {
		top := rel[strings.LastIndexByte(rel, '.')+1:]
		if top != "" && !seen[top] {
			seen[top] = true
			out = append(out, top)
		}
	}
	for _, ns := range c.Nameservers {
		if rel, in := relative(ns.Name, c.Zone); in {
			add(rel)
		}
	}
	for _, h := range c.Hosts {
		add(strings.ToLower(strings.TrimSuffix(h.Name, ".")))
	}
	return out
}

func validAddrs(what string, addrs []netip.Addr) error {
	for _, a := range addrs {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("%s: invalid address %v", what, a)
		}
	}
	return nil
}

// validName reports whether s (canonical, fully qualified) is a domain name
// miekg/dns can pack.
func validName(s string) bool {
	_, ok := dns.IsDomainName(s)
	return ok && s != "" && strings.HasSuffix(s, ".")
}

// canonical lower-cases s and makes it fully qualified.
func canonical(s string) string {
	if s == "" {
		return ""
	}
	return dns.Fqdn(strings.ToLower(s))
}

// mailboxName turns "hostmaster@example.org" into the domain form of RFC
// 1035 (dots of the local part escaped).
func mailboxName(s string) string {
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		s = strings.ReplaceAll(s[:at], ".", `\.`) + "." + s[at+1:]
	}
	return canonical(s)
}

// relative returns name relative to zone (both canonical): "" for the apex,
// "api" for api.ZONE; in is false when name is outside the zone.
func relative(name, zone string) (rel string, in bool) {
	if name == zone {
		return "", true
	}
	if len(name) > len(zone) && strings.HasSuffix(name, zone) && name[len(name)-len(zone)-1] == '.' {
		return name[:len(name)-len(zone)-1], true
	}
	return "", false
}

// seconds converts a validated duration to a TTL.
func seconds(d time.Duration) uint32 { return uint32(d / time.Second) }
