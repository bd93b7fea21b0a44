package dnszone

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no zone", func(c *Config) { c.Zone = "" }, "zone"},
		{"bad zone", func(c *Config) { c.Zone = "a..b" }, "zone"},
		{"no nameserver", func(c *Config) { c.Nameservers = nil }, "nameserver"},
		{"in-zone nameserver without glue", func(c *Config) { c.Nameservers[0].Addrs = nil }, "glue"},
		{"nameserver at apex", func(c *Config) { c.Nameservers[0].Name = "box.example.org" }, "apex"},
		{"nameserver is api", func(c *Config) { c.Nameservers[0].Name = "api.box.example.org" }, "collides"},
		{"single-label nameserver", func(c *Config) { c.Nameservers[1].Name = "ns2" }, "absolute"},
		{"no tunnel address", func(c *Config) { c.TunnelAddrs = nil }, "tunnel"},
		{"invalid address", func(c *Config) { c.ApexAddrs = []netip.Addr{{}} }, "invalid address"},
		{"bad caa tag", func(c *Config) { c.CAA[0].Tag = "isue" }, "caa"},
		{"bad mx", func(c *Config) { c.MX[0].Host = "a..b" }, "mx"},
		{"host collides with api", func(c *Config) { c.Hosts = append(c.Hosts, Host{Name: "api", Addrs: addrs("192.0.2.1")}) }, "collides"},
		{"host collides with ns", func(c *Config) { c.Hosts = append(c.Hosts, Host{Name: "ns1", Addrs: addrs("192.0.2.1")}) }, "collides"},
		{"host without address", func(c *Config) { c.Hosts[0].Addrs = nil }, "no address"},
		{"host at apex", func(c *Config) { c.Hosts[0].Name = "@" }, "relative"},
		{"ttl too short", func(c *Config) { c.TTL.Gateway = time.Millisecond }, "gateway ttl"},
		{"steered ttl too long", func(c *Config) { c.TTL.Steered = 1 << 62 }, "steered ttl"},
		{"negative soa", func(c *Config) { c.SOA.Minimum = -time.Second }, "soa minimum"},
		{"edns too small", func(c *Config) { c.EDNSBufSize = 100 }, "edns"},
		{"rrl rate", func(c *Config) { c.RRL.ResponsesPerSecond = -1 }, "rrl"},
		{"rrl slip", func(c *Config) { c.RRL.Slip = -2 }, "slip"},
		{"rrl v4 prefix", func(c *Config) { c.RRL.IPv4PrefixLen = 33 }, "ipv4"},
		{"rrl v6 prefix", func(c *Config) { c.RRL.IPv6PrefixLen = 8 }, "ipv6"},
		{"transfer prefix", func(c *Config) { c.TransferAllow = []netip.Prefix{{}} }, "transfer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			c.Nameservers = slices.Clone(c.Nameservers)
			tt.mutate(&c)
			err := c.Validate()
			if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
			if _, herr := NewHandler(c, NewIndex(), nil); herr == nil {
				t.Error("NewHandler accepted an invalid config")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{
		Zone:        "Box.Example.Org.",
		Nameservers: []Nameserver{{Name: "NS1.box.example.org", Addrs: addrs("192.0.2.53")}},
		TunnelAddrs: addrs("192.0.2.10"),
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Nameservers[0].Name != "NS1.box.example.org" {
		t.Errorf("Validate changed the caller's config: %q", c.Nameservers[0].Name)
	}
	d := c.withDefaults()
	if d.Zone != "box.example.org." || d.SOA.MName != "ns1.box.example.org." || d.SOA.RName != "hostmaster.box.example.org." {
		t.Errorf("names %q %q %q", d.Zone, d.SOA.MName, d.SOA.RName)
	}
	if !slices.Equal(d.APIAddrs, c.TunnelAddrs) {
		t.Errorf("api addrs %v", d.APIAddrs)
	}
	if d.EDNSBufSize != 1232 || d.TTL.Challenge != time.Minute || d.SOA.Minimum != time.Minute || d.RRL.Slip != 2 {
		t.Errorf("defaults %+v", d)
	}
	if got := mailboxName("first.last@example.org"); got != `first\.last.example.org.` {
		t.Errorf("mailbox %q", got)
	}
}

func TestReservedNames(t *testing.T) {
	got := testConfig().ReservedNames()
	want := []string{"api", "ns1", "www", "eu"}
	if !slices.Equal(got, want) {
		t.Errorf("reserved %v, want %v", got, want)
	}
}
