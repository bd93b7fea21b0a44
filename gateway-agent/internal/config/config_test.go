package config

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

func load(t *testing.T, args, env []string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg, _, err := Load(fs, args, env)
	return cfg, err
}

func TestPrecedenceFileEnvFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(file, []byte(`{"cloud": "https://api.file.test", "upstream": "http://127.0.0.1:1", "ping_interval": "1m",
		"mode": "dynamic", "resolve": ["a=127.0.0.1"], "wildcard": false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := load(t, []string{"-config", file, "-upstream", "http://127.0.0.1:3", "-passthrough", "-resolve", "b=127.0.0.2", "-resolve", "c=127.0.0.3"},
		[]string{"GATEHOUSE_AGENT_UPSTREAM=http://127.0.0.1:2", "GATEHOUSE_AGENT_PING_INTERVAL=30s", "GATEHOUSE_AGENT_MODE=tunnel", "OTHER=x"})
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.Cloud != "https://api.file.test":
		t.Errorf("cloud from the file: %q", cfg.Cloud)
	case cfg.Upstream != "http://127.0.0.1:3":
		t.Errorf("a flag beats the environment: %q", cfg.Upstream)
	case time.Duration(cfg.PingInterval) != 30*time.Second:
		t.Errorf("the environment beats the file: %v", cfg.PingInterval)
	case cfg.Mode != "tunnel" || !cfg.Passthrough || cfg.Wildcard:
		t.Errorf("mode %q passthrough %v wildcard %v", cfg.Mode, cfg.Passthrough, cfg.Wildcard)
	case !slices.Equal(cfg.Resolve, []string{"b=127.0.0.2", "c=127.0.0.3"}):
		t.Errorf("repeated list flags replace the file's and add up: %v", cfg.Resolve)
	case cfg.StateDir != DefaultStateDir() || cfg.HTTPSListen != ":8443" || cfg.TunnelConnections != 2:
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"clod": "typo"}`), 0o600)
	if _, err := load(t, []string{"-config", bad}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := load(t, []string{"-config", filepath.Join(dir, "missing.json")}, nil); err == nil {
		t.Fatal("a missing explicit file was accepted")
	}
}

func TestValidate(t *testing.T) {
	good := Default()
	good.Cloud = "https://api.box.example.org"
	if _, err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Config){
		"no cloud":          func(c *Config) { c.Cloud = "" },
		"http cloud":        func(c *Config) { c.Cloud = "http://api.box.example.org" },
		"bad mode":          func(c *Config) { c.Mode = "magic" },
		"bad acme":          func(c *Config) { c.ACMECA = "http://ca.example" },
		"short ping":        func(c *Config) { c.PingInterval = Duration(time.Millisecond) },
		"bad resolve":       func(c *Config) { c.Resolve = []string{"host"} },
		"bad local addr":    func(c *Config) { c.LocalAddrs = []string{"nope"} },
		"proxy w/o passthr": func(c *Config) { c.ProxyProtocol = true },
		"bad log level":     func(c *Config) { c.LogLevel = "loud" },
		"bad upstream":      func(c *Config) { c.Upstream = "ftp://x" },
		"no tunnel":         func(c *Config) { c.TunnelConnections = 0 },
		"too many tunnels":  func(c *Config) { c.TunnelConnections = MaxTunnelConnections + 1 },
	} {
		c := good
		mutate(&c)
		if _, err := c.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDerived(t *testing.T) {
	c := Default()
	c.Cloud = "https://api.box.test:8443/"
	if c.TunnelURL() != "https://api.box.test:8443/v1/tunnel" {
		t.Error(c.TunnelURL())
	}
	for up, want := range map[string]string{"http://127.0.0.1:8080": "127.0.0.1:8080", "https://[::1]": "[::1]:443", "10.0.0.1:8443": "10.0.0.1:8443"} {
		c.Upstream = up
		if got, err := c.UpstreamAddr(); err != nil || got != want {
			t.Errorf("%s: %s %v", up, got, err)
		}
	}
	for ca, want := range map[string]string{"": LetsEncryptProduction, "staging": LetsEncryptStaging, "https://127.0.0.1:14000/dir": "https://127.0.0.1:14000/dir"} {
		c.ACMECA = ca
		if got, _ := c.ACMEDirectory(); got != want {
			t.Errorf("%q: %s", ca, got)
		}
	}
}

// Validate hands back what it parsed, so nothing is parsed twice with its
// error dropped.
func TestValidateReturnsSettings(t *testing.T) {
	c := Default()
	c.Cloud = "https://api.box.example.org"
	c.Upstream = "https://127.0.0.1:9443"
	c.ACMECA = "staging"
	c.Resolve = []string{"API.box.example.org=127.0.0.2"}
	c.LocalAddrs = []string{"192.168.1.20", "fd00::20"}
	c.ForwardAllow = forward.AllowList{{To: []string{"::ffff:192.168.1.0/120"}, Ports: []forward.PortRange{{First: 22, Last: 22}}}}
	c.LogLevel = "debug"
	c.Mode = registry.ModeDynamic
	s, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case s.ACMEDirectory != LetsEncryptStaging:
		t.Errorf("directory %q", s.ACMEDirectory)
	case s.Upstream == nil || s.Upstream.String() != "https://127.0.0.1:9443" || s.UpstreamAddr != "127.0.0.1:9443":
		t.Errorf("upstream %v %q", s.Upstream, s.UpstreamAddr)
	case s.Resolve["api.box.example.org"] != netip.MustParseAddr("127.0.0.2"):
		t.Errorf("resolve %v", s.Resolve)
	case len(s.LocalAddrs) != 2 || s.LocalAddrs[1] != netip.MustParseAddr("fd00::20"):
		t.Errorf("local addrs %v", s.LocalAddrs)
	case !s.ForwardAllow.Allows("gw2", netip.MustParseAddr("192.168.1.9"), 22):
		t.Errorf("allow-list not compiled: %+v", s.ForwardAllow)
	case s.Level != slog.LevelDebug:
		t.Errorf("level %v", s.Level)
	}
	c.Passthrough, c.Upstream = true, "127.0.0.1:9443"
	if s, err := c.Validate(); err != nil || s.Upstream != nil || s.UpstreamAddr != "127.0.0.1:9443" {
		t.Errorf("passthrough: %v %v %q", err, s.Upstream, s.UpstreamAddr)
	}
}
