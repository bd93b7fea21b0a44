package registry

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestNormalizeDomain(t *testing.T) {
	for in, want := range map[string]string{
		"home.example.com":      "home.example.com",
		"Home.Example.COM.":     "home.example.com",
		" a-b.c9.example.org ":  "a-b.c9.example.org",
		"bücher.example.net":    "xn--bcher-kva.example.net",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
	} {
		if got, err := NormalizeDomain(in); err != nil || got != want {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", ".", "localhost", "a..b", "-a.example.com", "a-.example.com", "_acme-challenge.example.com",
		"a b.example.com", "ab--cd.example.com", "xn--zz.example.com", "*.example.com",
		"аpple.example.com", // Cyrillic а among Latin letters
		strings.Repeat("a", 64) + ".example.com",
		strings.Repeat("abcdefghi.", 26) + "com",
	} {
		if got, err := NormalizeDomain(in); !errors.Is(err, ErrInvalidDomain) {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want ErrInvalidDomain", in, got, err)
		}
	}
}

func TestParseAllowFrom(t *testing.T) {
	got, err := ParseAllowFrom([]string{"192.0.2.7/24", "[2001:db8::]/32", "::ffff:192.0.2.0/120"})
	if err != nil || len(got) != 3 || got[0].String() != "192.0.2.7/24" || got[1].String() != "2001:db8::/32" {
		t.Fatalf("ParseAllowFrom = %v, %v", got, err)
	}
	g := &Gateway{AllowFrom: got}
	for ip, want := range map[string]bool{"192.0.2.200": true, "192.0.3.1": false, "::ffff:192.0.2.1": true, "2001:db8::9": true, "2001:db9::": false} {
		if g.AllowsFrom(netip.MustParseAddr(ip)) != want {
			t.Errorf("AllowsFrom(%s) != %v", ip, want)
		}
	}
	if !(&Gateway{}).AllowsFrom(netip.MustParseAddr("203.0.113.1")) {
		t.Error("no allowfrom refuses an address")
	}
	for _, bad := range [][]string{{"192.0.2.1"}, {"192.0.2.0/33"}, {""}, {"example.com/24"}, make([]string, maxAllowFrom+1)} {
		if _, err := ParseAllowFrom(bad); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("ParseAllowFrom(%q) = %v", bad, err)
		}
	}
}

// FuzzNormalizeDomain: whatever the input, a name that passes is stable
// (normalising it again gives it back), lower-case ASCII, and within
// DNS's limits.
func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range []string{"home.example.com", "Bücher.example.net.", "xn--bcher-kva.example", "a..b", "аpple.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := NormalizeDomain(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidDomain) {
				t.Fatalf("NormalizeDomain(%q): error %v is not ErrInvalidDomain", s, err)
			}
			return
		}
		if again, err := NormalizeDomain(d); err != nil || again != d {
			t.Fatalf("NormalizeDomain(%q) = %q, but again %q, %v", s, d, again, err)
		}
		if len(d) > maxDomainLength || strings.ToLower(d) != d || !strings.Contains(d, ".") {
			t.Fatalf("NormalizeDomain(%q) = %q", s, d)
		}
		for i := 0; i < len(d); i++ {
			if d[i] >= 0x80 {
				t.Fatalf("NormalizeDomain(%q) = %q is not ASCII", s, d)
			}
		}
	})
}

// FuzzParseAllowFrom: an accepted entry is a valid network that reads
// back the same.
func FuzzParseAllowFrom(f *testing.F) {
	for _, s := range []string{"192.0.2.7/24", "[2001:db8::]/32", "1.2.3.4", "::/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseAllowFrom([]string{s})
		if err != nil {
			return
		}
		if len(ps) != 1 || !ps[0].IsValid() {
			t.Fatalf("ParseAllowFrom(%q) = %v", s, ps)
		}
		back, err := ParseAllowFrom([]string{ps[0].String()})
		if err != nil || back[0] != ps[0] {
			t.Fatalf("ParseAllowFrom(%q) = %v does not read back: %v, %v", s, ps, back, err)
		}
	})
}
