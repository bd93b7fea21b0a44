package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCustomDomains(t *testing.T) {
	c := Default()
	c.Cloud = "https://api.box.example.org"
	c.CustomDomains = []string{"Home.Example.com.", "bücher.example", " shop.example.net "}
	s, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"home.example.com", "xn--bcher-kva.example", "shop.example.net"}; !slices.Equal(s.CustomDomains, want) {
		t.Fatalf("normalised %v, want %v", s.CustomDomains, want)
	}
	for name, tc := range map[string]struct {
		domains []string
		reason  string
	}{
		"the zone itself":   {[]string{"box.example.org"}, "inside the cloud's zone"},
		"inside the zone":   {[]string{"myhome.BOX.example.org"}, "inside the cloud's zone"},
		"twice":             {[]string{"home.example.com", "HOME.example.com"}, "listed twice"},
		"wildcard":          {[]string{"*.example.com"}, "wildcard"},
		"ip":                {[]string{"192.0.2.1"}, "IP address"},
		"ipv6":              {[]string{"2001:db8::1"}, "IP address"},
		"one label":         {[]string{"localhost"}, "two labels"},
		"underscore":        {[]string{"my_home.example.com"}, "not a valid host name"},
		"hyphen at the end": {[]string{"home-.example.com"}, "not a valid host name"},
		"empty label":       {[]string{"home..example.com"}, ""},
		"digits tld":        {[]string{"home.123"}, "all digits"},
		"long label":        {[]string{strings.Repeat("a", 64) + ".example.com"}, ""},
		"empty":             {[]string{""}, "empty"},
	} {
		c.CustomDomains = tc.domains
		_, err := c.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s %q: %v, want an error saying %q", name, tc.domains, err, tc.reason)
		}
	}
	// A cloud URL without api. says nothing of the zone: the agent
	// checks against the registration's zone instead.
	c.Cloud = "https://gatehouse.example.org"
	c.CustomDomains = []string{"gatehouse.example.org"}
	if _, err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.CustomDomainsCheck = 0
	if _, err := c.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a check interval of 0: %v", err)
	}
}

func TestCustomDomainsFromFlagsAndEnvironment(t *testing.T) {
	cfg, err := load(t, []string{"-cloud", "https://api.box.test", "-custom-domains", "a.example.com", "-custom-domains", "b.example.com,c.example.com", "-custom-domains-check", "30s"},
		[]string{"GATEHOUSE_AGENT_CUSTOM_DOMAINS=env.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.CustomDomains, []string{"a.example.com", "b.example.com", "c.example.com"}) || time.Duration(cfg.CustomDomainsCheck) != 30*time.Second {
		t.Fatalf("%v %v", cfg.CustomDomains, cfg.CustomDomainsCheck)
	}
}

// FuzzNormalizeDomain: whatever the owner writes, the result is either an
// error or an ASCII name that normalises to itself.
func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range []string{"home.example.com", "bücher.example", "*.x.y", "a..b", "192.0.2.1", "xn--bcher-kva.example", "EXAMPLE.COM."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := NormalizeDomain(in)
		if err != nil {
			return
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c >= 0x80 || (c >= 'A' && c <= 'Z') {
				t.Fatalf("%q gave %q: not lower-case ASCII", in, out)
			}
		}
		if again, err := NormalizeDomain(out); err != nil || again != out {
			t.Fatalf("%q gave %q, which gives %q %v", in, out, again, err)
		}
	})
}
