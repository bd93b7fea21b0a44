package config

import (
	"errors"
	"flag"
	"io"
	"testing"
	"time"
)

func TestProxySettings(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c, _, err := Load(fs, nil, []string{
		"GATEHOUSE_AGENT_CLOUD=https://api.box.test:18443",
		"GATEHOUSE_AGENT_UPSTREAM=https://127.0.0.1:4443",
		"GATEHOUSE_AGENT_UPSTREAM_HOST={upstream_hostport}",
		"GATEHOUSE_AGENT_UPSTREAM_INSECURE_SKIP_VERIFY=true",
		"GATEHOUSE_AGENT_UPSTREAM_RESPONSE_TIMEOUT=90s",
		"GATEHOUSE_AGENT_FORWARDED_HEADER=true",
		"GATEHOUSE_AGENT_STATE_DIR=" + t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.UpstreamHost != UpstreamHostPort || !c.UpstreamInsecureSkipVerify || !c.ForwardedHeader ||
		time.Duration(c.UpstreamResponseTimeout) != 90*time.Second || time.Duration(c.UpstreamDialTimeout) != 10*time.Second ||
		time.Duration(c.UpstreamHealthInterval) != 30*time.Second {
		t.Fatalf("%+v", c)
	}
	if c.PublicHTTPSPort() != 18443 {
		t.Fatalf("public port from the cloud URL: %d", c.PublicHTTPSPort())
	}
	c.Mode = "dynamic"
	if c.PublicHTTPSPort() != 443 {
		t.Fatalf("dynamic mode: %d", c.PublicHTTPSPort())
	}
	c.PublicPort = 8443
	if c.PublicHTTPSPort() != 8443 {
		t.Fatalf("public_port: %d", c.PublicHTTPSPort())
	}
	c.PublicPort, c.Cloud, c.Mode = 0, "https://api.box.test", "tunnel"
	if c.PublicHTTPSPort() != 443 {
		t.Fatalf("no port in the cloud URL: %d", c.PublicHTTPSPort())
	}
	if _, _, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), []string{"-public-port", "99999"}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("-public-port 99999: %v", err)
	}
}

func TestValidateProxySettings(t *testing.T) {
	good := Default()
	good.Cloud = "https://api.box.example.org"
	good.Upstream = "https://127.0.0.1:4443"
	for _, h := range []string{"", "app.internal", "app.internal:8080", "[::1]:80", UpstreamHostPort} {
		c := good
		c.UpstreamHost = h
		if _, err := c.Validate(); err != nil {
			t.Errorf("upstream_host %q: %v", h, err)
		}
	}
	for name, mutate := range map[string]func(*Config){
		"host with path":     func(c *Config) { c.UpstreamHost = "app/x" },
		"host with space":    func(c *Config) { c.UpstreamHost = "a b" },
		"host with userinfo": func(c *Config) { c.UpstreamHost = "u@app" },
		"port only":          func(c *Config) { c.UpstreamHost = ":80" },
		"ca on http":         func(c *Config) { c.Upstream = "http://127.0.0.1:8080"; c.UpstreamCA = "/ca.pem" },
		"ca and insecure":    func(c *Config) { c.UpstreamCA = "/ca.pem"; c.UpstreamInsecureSkipVerify = true },
		"zero dial timeout":  func(c *Config) { c.UpstreamDialTimeout = 0 },
		"negative response":  func(c *Config) { c.UpstreamResponseTimeout = Duration(-time.Second) },
		"negative health":    func(c *Config) { c.UpstreamHealthInterval = Duration(-time.Second) },
		"passthrough+host":   func(c *Config) { c.Passthrough = true; c.UpstreamHost = "app" },
		"passthrough+fwd":    func(c *Config) { c.Passthrough = true; c.ForwardedHeader = true },
		"bad public port":    func(c *Config) { c.PublicPort = 70000 },
	} {
		c := good
		mutate(&c)
		if _, err := c.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
