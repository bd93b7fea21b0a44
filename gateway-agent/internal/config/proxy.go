package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/proxy"
)

// UpstreamHostPort, as upstream_host, sends the upstream URL's host:port
// as Host (Caddy's placeholder of the same name).
const UpstreamHostPort = proxy.UpstreamHostPort

// checkProxy checks the settings of the proxy toward the upstream. They
// mean nothing in passthrough mode, where the agent does not speak HTTP:
// setting them there is refused rather than silently ignored.
func (c *Config) checkProxy() error {
	if c.Passthrough && (c.UpstreamHost != "" || c.UpstreamCA != "" || c.UpstreamInsecureSkipVerify || c.ForwardedHeader || c.UpstreamResponseTimeout != 0) {
		return fmt.Errorf("upstream_host, upstream_ca, upstream_insecure_skip_verify, forwarded_header and upstream_response_timeout need proxy mode, not passthrough")
	}
	if h := c.UpstreamHost; h != "" && h != UpstreamHostPort {
		u, err := url.Parse("//" + h)
		if err != nil || u.Host != h || u.Hostname() == "" || strings.ContainsAny(h, " \t@") {
			return fmt.Errorf("upstream_host %q: want host or host:port, or %s", h, UpstreamHostPort)
		}
	}
	if c.UpstreamCA != "" || c.UpstreamInsecureSkipVerify {
		if !strings.HasPrefix(strings.ToLower(c.Upstream), "https://") {
			return fmt.Errorf("upstream_ca and upstream_insecure_skip_verify need an https:// upstream")
		}
		if c.UpstreamCA != "" && c.UpstreamInsecureSkipVerify {
			return fmt.Errorf("upstream_ca and upstream_insecure_skip_verify exclude each other: the first verifies, the second does not")
		}
	}
	if time.Duration(c.UpstreamDialTimeout) <= 0 {
		return fmt.Errorf("upstream_dial_timeout %s: must be positive", time.Duration(c.UpstreamDialTimeout))
	}
	if time.Duration(c.UpstreamResponseTimeout) < 0 || time.Duration(c.UpstreamHealthInterval) < 0 {
		return fmt.Errorf("upstream_response_timeout and upstream_health_interval must not be negative")
	}
	if c.PublicPort < 0 || c.PublicPort > 65535 {
		return fmt.Errorf("public_port %d: want 1-65535, or 0 for the cloud URL's port", c.PublicPort)
	}
	return nil
}

// PublicHTTPSPort is the port visitors reach the gateway's name on:
// public_port, or else in tunnel mode the cloud URL's, since the
// registration API and the tunnel frontend are one Caddy server; 443 when
// the URL names none, and in dynamic mode (the name is the gateway's own
// public address, whatever the router forwards).
func (c *Config) PublicHTTPSPort() int {
	if c.PublicPort != 0 {
		return c.PublicPort
	}
	if c.Mode == "dynamic" {
		return 443
	}
	if u, err := url.Parse(c.Cloud); err == nil && u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err == nil {
			return p
		}
	}
	return 443
}
