// Package config is the gateway agent's configuration: its fields and
// defaults, and how they are read from a JSON file, the environment
// (GATEHOUSE_AGENT_*) and command-line flags, in that order of precedence
// (a flag beats the environment, which beats the file, which beats the
// default).
//
// It only reads and checks settings; it does not open files other than the
// configuration file, nor connect anywhere.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/localapi"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// ACME directories of Let's Encrypt, the names "production" and "staging"
// stand for.
const (
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// EnvPrefix starts the name of every environment variable the agent reads.
const EnvPrefix = "GATEHOUSE_AGENT_"

// DefaultFile is read when no -config flag nor GATEHOUSE_AGENT_CONFIG names
// a file, if it exists.
const DefaultFile = "/etc/gateway-agent/config.json"

// ErrInvalid wraps every validation error.
var ErrInvalid = errors.New("invalid configuration")

// Duration is a time.Duration written as a Go duration string ("5m") in
// JSON.
type Duration time.Duration

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string, or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration: want a string such as \"5m\": %w", err)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Config is everything the agent can be told. The JSON names are the file's
// keys; the flag of a key is its name with hyphens (-ping-interval) and its
// environment variable GATEHOUSE_AGENT_ and the key in capitals
// (GATEHOUSE_AGENT_PING_INTERVAL).
type Config struct {
	// Cloud is the base URL of the registration API, https://api.ZONE.
	Cloud string `json:"cloud"`
	// CloudCA is a PEM file of roots that sign the cloud's certificate,
	// for a cloud whose certificate the system does not trust (a test or
	// private cloud). Empty means the system roots.
	CloudCA string `json:"cloud_ca,omitempty"`
	// Resolve maps host names to addresses, as HOST=IP, for the cloud's
	// API and tunnel and the ACME directory: the agent connects to IP
	// instead of resolving HOST (like curl --resolve), keeping the port.
	Resolve []string `json:"resolve,omitempty"`
	// Upstream is the gateway's own web app: an http:// or https:// URL
	// the agent proxies to, or, in passthrough mode, the host:port of a
	// server that terminates TLS itself (a URL is accepted, its host:port
	// is used).
	Upstream string `json:"upstream"`
	// StateDir keeps the registration (with its token), the certificates
	// and the status file. Created with mode 0700.
	StateDir string `json:"state_dir"`
	// ACMECA is the ACME directory: "production" (Let's Encrypt, the
	// default), "staging" (Let's Encrypt's staging), or a directory URL.
	ACMECA string `json:"acme_ca"`
	// ACMERoot is a PEM file of roots that sign the ACME directory's own
	// HTTPS certificate (Pebble, Caddy's acme_server).
	ACMERoot string `json:"acme_root,omitempty"`
	// ACMEEmail is the ACME account's contact; empty uses the email given
	// in the setup page, if any.
	ACMEEmail string `json:"acme_email,omitempty"`
	// ACMEResolvers are DNS servers (host:port) asked whether a DNS-01
	// challenge record is visible before the CA is told to look. Empty
	// means the zone's authoritative servers, found from the system
	// resolver.
	ACMEResolvers []string `json:"acme_resolvers,omitempty"`
	// Wildcard also obtains *.NAME.ZONE, which covers local.NAME.ZONE for
	// browsers on the LAN. Default true.
	Wildcard bool `json:"wildcard"`
	// HTTPSListen is the agent's HTTPS port for LAN clients ("" turns it
	// off). Default ":8443".
	HTTPSListen string `json:"https_listen"`
	// SetupListen is the setup page's plain HTTP port on the LAN ("" turns
	// it off; the status and setup commands then only read the status
	// file). Default ":8090".
	SetupListen string `json:"setup_listen"`
	// MDNS advertises the setup page as MDNSHost.local. Default true.
	MDNS bool `json:"mdns"`
	// MDNSHost is the host name advertised with mDNS. Default "gateway".
	MDNSHost string `json:"mdns_host"`
	// PingInterval is how often the agent reports its local addresses;
	// it also reports at once when they change. Default 5m.
	PingInterval Duration `json:"ping_interval"`
	// Mode is "tunnel" (the name points at the cloud, traffic arrives
	// through the tunnel; the default) or "dynamic" (the name points at
	// the address the gateway pings from; no tunnel): the registry's own
	// type, so the agent asks for exactly what the cloud knows.
	Mode registry.Mode `json:"mode"`
	// RenameGrace is how long a name replaced by a rename stays
	// registered to this gateway before it is given up: the owner can
	// switch back to it meanwhile, and nobody else can take it. Default
	// 168h (7 days); 0 gives it up at once.
	RenameGrace Duration `json:"rename_grace"`
	// Passthrough relays raw TCP to Upstream instead of terminating TLS.
	Passthrough bool `json:"passthrough"`
	// ProxyProtocol sends a PROXY protocol v2 header to the upstream
	// before each relayed connection (passthrough mode only).
	ProxyProtocol bool `json:"proxy_protocol"`
	// The proxy toward Upstream (not passthrough), as Caddy's
	// reverse_proxy: see proxy.go in this package.
	UpstreamHost               string   `json:"upstream_host,omitempty"`
	UpstreamCA                 string   `json:"upstream_ca,omitempty"`
	UpstreamInsecureSkipVerify bool     `json:"upstream_insecure_skip_verify,omitempty"`
	UpstreamDialTimeout        Duration `json:"upstream_dial_timeout"`
	UpstreamResponseTimeout    Duration `json:"upstream_response_timeout"`
	UpstreamHealthInterval     Duration `json:"upstream_health_interval"`
	ForwardedHeader            bool     `json:"forwarded_header,omitempty"`
	// PublicPort is the cloud's public HTTPS port, shown in the
	// gateway's URL; 0 takes the cloud URL's port (443 when it has none).
	PublicPort int `json:"public_port,omitempty"`
	// MAC overrides the MAC address the provisional name is derived from
	// (default: the default-route interface's).
	MAC string `json:"mac,omitempty"`
	// LocalAddrs overrides the LAN addresses reported in pings (default:
	// the addresses of the default-route interface).
	LocalAddrs []string `json:"local_addrs,omitempty"`
	// APIListen is the local REST API's address (forwardings), loopback
	// only; "" turns it off. Default "127.0.0.1:8091".
	APIListen string `json:"api_listen"`
	// Forwards are the forwardings opened at start: connections to Local
	// go to Remote on IP behind Gateway, through the cloud.
	Forwards []forward.Spec `json:"forwards,omitempty"`
	// ForwardAllow is the allow-list of internal destinations other
	// gateways may reach through this one. Empty (the default) refuses
	// every forwarding toward this gateway.
	ForwardAllow forward.AllowList `json:"forward_allow,omitempty"`
	// ForwardDialTimeout bounds connecting to an allowed destination.
	// Default 5s; keep it below the cloud's open_timeout (10s).
	ForwardDialTimeout Duration `json:"forward_dial_timeout"`
	// ForwardWait is how long a local connection accepted while the
	// tunnel is down waits for it before it is closed. Default 5s; 0
	// closes at once.
	ForwardWait Duration `json:"forward_wait"`
	// TunnelConnections is how many tunnels the agent keeps open, each to
	// a different cloud node, when the cloud lists several (GET
	// /v1/nodes); like cloudflared's --ha-connections. 1 keeps one tunnel
	// through DNS, as a single-node cloud always gets. Default 2, at most
	// MaxTunnelConnections.
	TunnelConnections int `json:"tunnel_connections"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `json:"log_level"`
	// LogFormat is text or json. Default text.
	LogFormat string `json:"log_format"`
}

// MaxTunnelConnections bounds tunnel_connections: each tunnel is one
// session a node keeps for the gateway, and a few nodes already survive the
// loss of one.
const MaxTunnelConnections = 8

// Default returns the configuration before any file, variable or flag.
func Default() Config {
	return Config{
		Upstream:     "http://127.0.0.1:8080",
		StateDir:     DefaultStateDir(),
		ACMECA:       "production",
		Wildcard:     true,
		HTTPSListen:  ":8443",
		SetupListen:  ":8090",
		MDNS:         true,
		MDNSHost:     "gateway",
		PingInterval: Duration(5 * time.Minute),
		Mode:         registry.ModeTunnel,
		RenameGrace:  Duration(7 * 24 * time.Hour),
		APIListen:    "127.0.0.1:8091",
		// The cloud waits 10s for the target's answer by default: the
		// dial must fail before that for its reason to arrive.
		ForwardDialTimeout: Duration(5 * time.Second),
		ForwardWait:        Duration(5 * time.Second),
		TunnelConnections:  2,
		LogLevel:           "info",
		LogFormat:          "text",

		// The proxy's defaults: see proxy.go.
		UpstreamDialTimeout:    Duration(10 * time.Second),
		UpstreamHealthInterval: Duration(30 * time.Second),
	}
}

// DefaultStateDir is where the state lives unless configured.
func DefaultStateDir() string {
	if runtime.GOOS == "windows" {
		if pd := os.Getenv("ProgramData"); pd != "" {
			return filepath.Join(pd, "gateway-agent")
		}
	}
	return "/var/lib/gateway-agent"
}

// option is one setting, known by its JSON key.
type option struct {
	key   string
	usage string
	bool  bool
	set   func(c *Config, v string) error
}

func str(p func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *p(c) = v; return nil }
}

func list(p func(*Config) *[]string) func(*Config, string) error {
	return func(c *Config, v string) error {
		var out []string
		for s := range strings.SplitSeq(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		*p(c) = out
		return nil
	}
}

func boolean(p func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		*p(c) = b
		return nil
	}
}

func duration(p func(*Config) *Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		*p(c) = Duration(d)
		return nil
	}
}

// jsonList reads a JSON array, for the settings whose elements are objects:
// in variables and flags they are written as in the file.
func jsonList[T any](p func(*Config) *[]T) func(*Config, string) error {
	return func(c *Config, v string) error {
		var out []T
		dec := json.NewDecoder(strings.NewReader(v))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out); err != nil {
			return fmt.Errorf("want a JSON array as in the configuration file: %w", err)
		}
		*p(c) = out
		return nil
	}
}

// options lists every setting once; flags and variables derive from it.
var options = []option{
	{key: "cloud", usage: "registration API base URL, https://api.ZONE", set: str(func(c *Config) *string { return &c.Cloud })},
	{key: "cloud_ca", usage: "PEM roots for the cloud's certificate (default: system roots)", set: str(func(c *Config) *string { return &c.CloudCA })},
	{key: "resolve", usage: "HOST=IP pairs, comma separated: connect to IP for HOST", set: list(func(c *Config) *[]string { return &c.Resolve })},
	{key: "upstream", usage: "the gateway's web app URL (passthrough: host:port)", set: str(func(c *Config) *string { return &c.Upstream })},
	{key: "state_dir", usage: "directory for the token, certificates and status", set: str(func(c *Config) *string { return &c.StateDir })},
	{key: "acme_ca", usage: "ACME CA: production, staging or a directory URL", set: str(func(c *Config) *string { return &c.ACMECA })},
	{key: "acme_root", usage: "PEM roots for the ACME directory's HTTPS certificate", set: str(func(c *Config) *string { return &c.ACMERoot })},
	{key: "acme_email", usage: "ACME account contact email", set: str(func(c *Config) *string { return &c.ACMEEmail })},
	{key: "acme_resolvers", usage: "DNS servers (host:port, comma separated) to check challenge propagation", set: list(func(c *Config) *[]string { return &c.ACMEResolvers })},
	{key: "wildcard", bool: true, usage: "also obtain *.NAME.ZONE", set: boolean(func(c *Config) *bool { return &c.Wildcard })},
	{key: "https_listen", usage: "LAN HTTPS address (empty: off)", set: str(func(c *Config) *string { return &c.HTTPSListen })},
	{key: "setup_listen", usage: "setup page address (empty: off)", set: str(func(c *Config) *string { return &c.SetupListen })},
	{key: "mdns", bool: true, usage: "advertise the setup page with mDNS", set: boolean(func(c *Config) *bool { return &c.MDNS })},
	{key: "mdns_host", usage: "mDNS host name (HOST.local)", set: str(func(c *Config) *string { return &c.MDNSHost })},
	{key: "ping_interval", usage: "how often to report the local addresses", set: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		c.PingInterval = Duration(d)
		return nil
	}},
	{key: "mode", usage: "tunnel or dynamic", set: func(c *Config, v string) error { c.Mode = registry.Mode(v); return nil }},
	{key: "rename_grace", usage: "how long a renamed-away name stays reserved to this gateway", set: duration(func(c *Config) *Duration { return &c.RenameGrace })},
	{key: "passthrough", bool: true, usage: "relay raw TCP to the upstream instead of terminating TLS", set: boolean(func(c *Config) *bool { return &c.Passthrough })},
	{key: "proxy_protocol", bool: true, usage: "send a PROXY v2 header to the upstream (passthrough)", set: boolean(func(c *Config) *bool { return &c.ProxyProtocol })},
	{key: "upstream_host", usage: "Host sent to the upstream (default: the one the client asked for; " + UpstreamHostPort + ": the upstream's)", set: str(func(c *Config) *string { return &c.UpstreamHost })},
	{key: "upstream_ca", usage: "PEM roots for an https:// upstream's certificate", set: str(func(c *Config) *string { return &c.UpstreamCA })},
	{key: "upstream_insecure_skip_verify", bool: true, usage: "do not verify an https:// upstream's certificate", set: boolean(func(c *Config) *bool { return &c.UpstreamInsecureSkipVerify })},
	{key: "upstream_dial_timeout", usage: "bound on connecting to the upstream", set: duration(func(c *Config) *Duration { return &c.UpstreamDialTimeout })},
	{key: "upstream_response_timeout", usage: "bound on waiting for the upstream's response headers (0: none)", set: duration(func(c *Config) *Duration { return &c.UpstreamResponseTimeout })},
	{key: "upstream_health_interval", usage: "how often to check the upstream is listening (0: off)", set: duration(func(c *Config) *Duration { return &c.UpstreamHealthInterval })},
	{key: "forwarded_header", bool: true, usage: "also send an RFC 7239 Forwarded header", set: boolean(func(c *Config) *bool { return &c.ForwardedHeader })},
	{key: "public_port", usage: "the cloud's public HTTPS port (default: the cloud URL's)", set: func(c *Config, v string) error {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return fmt.Errorf("want a port number, got %q", v)
		}
		c.PublicPort = int(p)
		return nil
	}},
	{key: "mac", usage: "MAC address for the provisional name (default: the default-route interface's)", set: str(func(c *Config) *string { return &c.MAC })},
	{key: "local_addrs", usage: "LAN addresses to report, comma separated (default: detected)", set: list(func(c *Config) *[]string { return &c.LocalAddrs })},
	{key: "api_listen", usage: "local REST API address, loopback only (empty: off)", set: str(func(c *Config) *string { return &c.APIListen })},
	{key: "forwards", usage: `forwardings opened at start, JSON: [{"local":"2022","gateway":"gw1","ip":"192.168.1.10","remote":22}]`, set: jsonList(func(c *Config) *[]forward.Spec { return &c.Forwards })},
	{key: "forward_allow", usage: `destinations other gateways may reach, JSON: [{"to":["192.168.1.0/24"],"ports":[22,"8000-8100"],"from":["gw2"]}]`, set: jsonList(func(c *Config) *[]forward.AllowRule { return (*[]forward.AllowRule)(&c.ForwardAllow) })},
	{key: "forward_dial_timeout", usage: "bound on connecting to an allowed destination", set: duration(func(c *Config) *Duration { return &c.ForwardDialTimeout })},
	{key: "forward_wait", usage: "how long a forwarded connection waits for a tunnel that is down", set: duration(func(c *Config) *Duration { return &c.ForwardWait })},
	{key: "tunnel_connections", usage: "how many tunnels to keep, each to a different cloud node (1: one, through DNS)", set: func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want a number, got %q", v)
		}
		c.TunnelConnections = n
		return nil
	}},
	{key: "log_level", usage: "debug, info, warn or error", set: str(func(c *Config) *string { return &c.LogLevel })},
	{key: "log_format", usage: "text or json", set: str(func(c *Config) *string { return &c.LogFormat })},
}

func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// EnvName is the environment variable of a JSON key.
func EnvName(key string) string { return EnvPrefix + strings.ToUpper(key) }

type flagValue struct {
	opt option
	val string
}

// Load builds the configuration of a command: the defaults, then the file
// (from -config, GATEHOUSE_AGENT_CONFIG, or DefaultFile if it exists), then
// the variables of env (os.Environ form), then the flags in args. It returns
// the remaining arguments. It does not validate: call Validate.
func Load(fs *flag.FlagSet, args, env []string) (Config, []string, error) {
	var pending []flagValue
	var file string
	fs.StringVar(&file, "config", "", "JSON configuration file (default "+DefaultFile+" if present)")
	for _, o := range options {
		o := o
		record := func(v string) error { pending = append(pending, flagValue{o, v}); return nil }
		if o.bool {
			// A bare -passthrough means true, as for flag.Bool.
			fs.BoolFunc(flagName(o.key), o.usage+" (true/false)", record)
		} else {
			fs.Func(flagName(o.key), o.usage, record)
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, nil, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			vars[k] = v
		}
	}
	cfg := Default()
	if file == "" {
		file = vars[EnvName("config")]
	}
	explicit := file != ""
	if file == "" {
		file = DefaultFile
	}
	if err := cfg.loadFile(file, explicit); err != nil {
		return Config{}, nil, err
	}
	for _, o := range options {
		if v, ok := vars[EnvName(o.key)]; ok {
			if err := o.set(&cfg, v); err != nil {
				return Config{}, nil, fmt.Errorf("%w: %s: %w", ErrInvalid, EnvName(o.key), err)
			}
		}
	}
	// Repeated list flags add up; the first one replaces what the file
	// or the environment said.
	seen := map[string]bool{}
	for _, p := range pending {
		forwardsBefore, allowBefore := cfg.Forwards, cfg.ForwardAllow
		var before []string
		isList := false
		switch p.opt.key {
		case "forwards", "forward_allow":
			isList = true
		case "resolve":
			before, isList = cfg.Resolve, true
		case "acme_resolvers":
			before, isList = cfg.ACMEResolvers, true
		case "local_addrs":
			before, isList = cfg.LocalAddrs, true
		}
		if err := p.opt.set(&cfg, p.val); err != nil {
			return Config{}, nil, fmt.Errorf("%w: -%s: %w", ErrInvalid, flagName(p.opt.key), err)
		}
		if isList && seen[p.opt.key] {
			switch p.opt.key {
			case "resolve":
				cfg.Resolve = append(before, cfg.Resolve...)
			case "acme_resolvers":
				cfg.ACMEResolvers = append(before, cfg.ACMEResolvers...)
			case "local_addrs":
				cfg.LocalAddrs = append(before, cfg.LocalAddrs...)
			case "forwards":
				cfg.Forwards = append(forwardsBefore, cfg.Forwards...)
			case "forward_allow":
				cfg.ForwardAllow = append(allowBefore, cfg.ForwardAllow...)
			}
		}
		seen[p.opt.key] = true
	}
	return cfg, fs.Args(), nil
}

// loadFile reads path over c. A missing file is an error only when it was
// asked for.
func (c *Config) loadFile(path string, explicit bool) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading configuration: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: %s: trailing data after the JSON object", ErrInvalid, path)
	}
	return nil
}

// Settings are the values of a Config that need parsing, parsed once by
// Validate: the agent uses these instead of parsing again.
type Settings struct {
	// ACMEDirectory is the directory URL ACMECA stands for.
	ACMEDirectory string
	// Upstream is the upstream URL; nil in passthrough mode.
	Upstream *url.URL
	// UpstreamAddr is the upstream's host:port.
	UpstreamAddr string
	// Resolve maps lower-case host names to their override address.
	Resolve map[string]netip.Addr
	// LocalAddrs are the fixed LAN addresses; empty means detect them.
	LocalAddrs []netip.Addr
	// ForwardAllow is the compiled allow-list.
	ForwardAllow forward.AllowList
	// Level is the log level.
	Level slog.Level
}

// Validate checks the configuration, reports the first problem, and
// returns the parsed settings.
func (c *Config) Validate() (Settings, error) {
	var s Settings
	bad := func(format string, args ...any) (Settings, error) {
		return Settings{}, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	var err error
	if c.Cloud == "" {
		return bad("cloud is required (https://api.ZONE)")
	}
	u, err := url.Parse(c.Cloud)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return bad("cloud %q: want an https:// URL", c.Cloud)
	}
	if s.UpstreamAddr, err = c.UpstreamAddr(); err != nil {
		return bad("upstream: %v", err)
	}
	if !c.Passthrough {
		u, err := url.Parse(c.Upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("upstream %q: want an http:// or https:// URL", c.Upstream)
		}
		s.Upstream = u
	}
	if c.ProxyProtocol && !c.Passthrough {
		return bad("proxy_protocol needs passthrough (in proxy mode the agent sets X-Forwarded-For)")
	}
	if err := c.checkProxy(); err != nil {
		return bad("%v", err)
	}
	if c.StateDir == "" {
		return bad("state_dir is required")
	}
	if s.ACMEDirectory, err = c.ACMEDirectory(); err != nil {
		return bad("%v", err)
	}
	for _, r := range c.ACMEResolvers {
		if _, err := netip.ParseAddrPort(r); err != nil {
			if _, _, err := splitHostPort(r); err != nil {
				return bad("acme_resolvers: %q: want host:port", r)
			}
		}
	}
	if s.Resolve, err = c.ResolveMap(); err != nil {
		return bad("%v", err)
	}
	if time.Duration(c.PingInterval) < time.Second {
		return bad("ping_interval %s: at least 1s", time.Duration(c.PingInterval))
	}
	if !c.Mode.Valid() {
		return bad("mode %q: want %s or %s", c.Mode, registry.ModeTunnel, registry.ModeDynamic)
	}
	if time.Duration(c.RenameGrace) < 0 {
		return bad("rename_grace %s: must not be negative", time.Duration(c.RenameGrace))
	}
	if c.MDNS && c.MDNSHost == "" {
		return bad("mdns_host is empty")
	}
	if s.LocalAddrs, err = c.LocalAddrList(); err != nil {
		return bad("%v", err)
	}
	if c.APIListen != "" {
		if err := localapi.CheckListen(c.APIListen); err != nil {
			return bad("%v", err)
		}
	}
	locals := map[string]bool{}
	for i, f := range c.Forwards {
		if err := f.Validate(); err != nil {
			return bad("forwards[%d]: %v", i, err)
		}
		// Port 0 picks a free port each time: never a clash.
		if locals[f.ListenAddr()] && !strings.HasSuffix(f.ListenAddr(), ":0") {
			return bad("forwards[%d]: local %s is used twice", i, f.ListenAddr())
		}
		locals[f.ListenAddr()] = true
	}
	if s.ForwardAllow, err = c.ForwardAllow.Compile(); err != nil {
		return bad("forward_allow: %v", err)
	}
	if time.Duration(c.ForwardDialTimeout) <= 0 {
		return bad("forward_dial_timeout %s: must be positive", time.Duration(c.ForwardDialTimeout))
	}
	if time.Duration(c.ForwardWait) < 0 {
		return bad("forward_wait %s: must not be negative", time.Duration(c.ForwardWait))
	}
	if c.TunnelConnections < 1 || c.TunnelConnections > MaxTunnelConnections {
		return bad("tunnel_connections %d: want 1 to %d", c.TunnelConnections, MaxTunnelConnections)
	}
	if s.Level, err = c.Level(); err != nil {
		return bad("%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("log_format %q: want text or json", c.LogFormat)
	}
	return s, nil
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("missing port in %q", s)
	}
	if _, err := strconv.ParseUint(s[i+1:], 10, 16); err != nil {
		return "", "", fmt.Errorf("bad port in %q", s)
	}
	return s[:i], s[i+1:], nil
}

// ACMEDirectory is the directory URL that ACMECA stands for.
func (c *Config) ACMEDirectory() (string, error) {
	switch c.ACMECA {
	case "", "production":
		return LetsEncryptProduction, nil
	case "staging":
		return LetsEncryptStaging, nil
	}
	u, err := url.Parse(c.ACMECA)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("acme_ca %q: want production, staging or an https:// directory URL", c.ACMECA)
	}
	return c.ACMECA, nil
}

// TunnelURL is the cloud's tunnel endpoint.
func (c *Config) TunnelURL() string { return strings.TrimSuffix(c.Cloud, "/") + tunnel.Path }

// UpstreamAddr is the host:port the upstream listens on.
func (c *Config) UpstreamAddr() (string, error) {
	s := c.Upstream
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", err
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			return "", fmt.Errorf("%q has no host", s)
		}
		if port == "" {
			switch u.Scheme {
			case "http":
				port = "80"
			case "https":
				port = "443"
			default:
				return "", fmt.Errorf("%q has no port", s)
			}
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return host + ":" + port, nil
	}
	if _, _, err := splitHostPort(s); err != nil {
		return "", err
	}
	return s, nil
}

// ResolveMap parses Resolve into host → address.
func (c *Config) ResolveMap() (map[string]netip.Addr, error) {
	m := map[string]netip.Addr{}
	for _, r := range c.Resolve {
		host, ip, ok := strings.Cut(r, "=")
		if !ok {
			return nil, fmt.Errorf("resolve %q: want HOST=IP", r)
		}
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		if err != nil {
			return nil, fmt.Errorf("resolve %q: %w", r, err)
		}
		m[strings.ToLower(strings.TrimSpace(host))] = a
	}
	return m, nil
}

// LocalAddrList parses LocalAddrs.
func (c *Config) LocalAddrList() ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range c.LocalAddrs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("local_addrs %q: %w", s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// Level is LogLevel as a slog level.
func (c *Config) Level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}
