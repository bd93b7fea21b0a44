package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// NormalizeDomain returns the ASCII, lower-case form of a custom domain
// written in Unicode (bücher.example) or ASCII, or why it is not a host
// name a public CA can issue a certificate for: an IP address, a wildcard,
// a single label, a label that is not letters, digits and inner hyphens.
func NormalizeDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	if d == "" {
		return "", errors.New("empty name")
	}
	if strings.HasPrefix(d, "*.") {
		// The CNAME delegates one name; a wildcard would need one per
		// name anyway.
		return "", fmt.Errorf("%q: a wildcard cannot be a custom domain", d)
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return "", fmt.Errorf("%q: an IP address, not a host name", d)
	}
	if !utf8.ValidString(d) {
		return "", fmt.Errorf("%q: not UTF-8", d)
	}
	a, err := idna.Lookup.ToASCII(d)
	if err == nil {
		// What the owner wrote must map to one name: an ASCII form that
		// does not map to itself again is not one.
		var again string
		if again, err = idna.Lookup.ToASCII(a); err == nil && again != a {
			err = errors.New("no stable ASCII form")
		}
	}
	if err != nil {
		return "", fmt.Errorf("%q: not a valid host name: %v", d, err)
	}
	a = strings.ToLower(a)
	if len(a) > 253 {
		return "", fmt.Errorf("%q: longer than 253 characters", d)
	}
	labels := strings.Split(a, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("%q: a custom domain has at least two labels (home.example.com)", d)
	}
	for _, l := range labels {
		if err := checkLabel(l); err != nil {
			return "", fmt.Errorf("%q: %v", d, err)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", fmt.Errorf("%q: the last label is all digits", d)
	}
	return a, nil
}

// checkLabel applies the LDH rule (RFC 1123) that ACME CAs apply.
func checkLabel(l string) error {
	if l == "" || len(l) > 63 {
		return fmt.Errorf("label %q: 1 to 63 characters", l)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with a hyphen", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("label %q: only letters, digits and hyphens", l)
		}
	}
	return nil
}

// InZone reports whether domain is zone or a name below it (both in ASCII,
// lower case).
func InZone(domain, zone string) bool {
	zone = strings.ToLower(strings.TrimSuffix(zone, "."))
	return zone != "" && (domain == zone || strings.HasSuffix(domain, "."+zone))
}

// CloudZone is the zone the cloud URL names when it follows the
// https://api.ZONE convention, else "" (the zone is then known only from
// the registration).
func (c *Config) CloudZone() string {
	u, err := url.Parse(c.Cloud)
	if err != nil {
		return ""
	}
	h := strings.ToLower(u.Hostname())
	if z, ok := strings.CutPrefix(h, "api."); ok && strings.Contains(z, ".") {
		return z
	}
	return ""
}

// CustomDomainList normalises CustomDomains: ASCII, lower case, each once.
// A name inside the cloud's zone is refused: it is a gateway name already,
// and the cloud refuses it too.
func (c *Config) CustomDomainList() ([]string, error) {
	zone := c.CloudZone()
	seen := map[string]bool{}
	var out []string
	for _, d := range c.CustomDomains {
		a, err := NormalizeDomain(d)
		if err != nil {
			return nil, fmt.Errorf("custom_domains: %v", err)
		}
		if InZone(a, zone) {
			return nil, fmt.Errorf("custom_domains: %q is inside the cloud's zone %s: gateway names there need no claim", d, zone)
		}
		if seen[a] {
			return nil, fmt.Errorf("custom_domains: %q is listed twice", d)
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}
