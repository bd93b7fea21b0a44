package registry

import (
	"fmt"
	"net"
	"strings"
	"unicode"

	"golang.org/x/net/idna"
)

// MaxNameLength is the longest label DNS allows.
const MaxNameLength = 63

// The ingress checks the name of every new connection's SNI, so these two
// rules are written out rather than regular expressions: a regexp match
// costs far more than the loop, most of all on a cold cache between
// connections. names_test.go checks them against the expressions they
// replace.

// isLabel reports whether name matches ^([a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$:
// lower-case letters, digits and inner hyphens.
func isLabel(name string) bool {
	if name == "" || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isNSName reports whether name matches ^ns[0-9]+$, the zone's own name
// servers.
func isNSName(name string) bool {
	if len(name) < 3 || name[:2] != "ns" {
		return false
	}
	for i := 2; i < len(name); i++ {
		if c := name[i]; c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// builtinReserved are names the zone itself uses.
var builtinReserved = []string{"api", "www", "_psl", "local"}

// Names checks gateway names against the syntax and the reserved list.
type Names struct {
	reserved map[string]bool
}

// NewNames returns a checker that refuses the built-in reserved names and extra.
func NewNames(extra []string) *Names {
	n := &Names{reserved: map[string]bool{}}
	for _, r := range builtinReserved {
		n.reserved[r] = true
	}
	for _, r := range extra {
		n.reserved[strings.ToLower(r)] = true
	}
	return n
}

// Check returns ErrInvalidName or ErrReservedName (wrapped with the reason),
// or nil for a name that may be registered. Names are not case-folded: an
// upper-case name is refused, so that the stored name is the DNS name.
func (n *Names) Check(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidName, MaxNameLength)
	}
	if !isLabel(name) {
		return fmt.Errorf("%w: only a-z, 0-9 and inner hyphens are allowed", ErrInvalidName)
	}
	if err := checkACMELabel(name); err != nil {
		return err
	}
	if n.reserved[name] || isNSName(name) {
		return fmt.Errorf("%w: %s", ErrReservedName, name)
	}
	return nil
}

// Configured reports whether name is reserved by the built-in rules or
// the configuration, which a run-time release cannot undo. Run-time
// reservations are not held here but checked by the store inside the
// registering transaction, so that they hold on every node at once and
// never hide a name registered before its reservation.
func (n *Names) Configured(name string) bool {
	return n.reserved[name] || isNSName(name)
}

// NameFromMAC derives the provisional name of a gateway from its MAC
// address: "gw-" and the twelve hex digits, so it is stable across
// re-installs and never collides with another device.
func NameFromMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%w: not a 48-bit MAC address", ErrInvalidName)
	}
	return "gw-" + strings.ReplaceAll(hw.String(), ":", ""), nil
}

// checkACMELabel applies the label rules ACME CAs apply (Let's Encrypt's
// Boulder) beyond LDH syntax, so that a registered name can always get its
// certificate: hyphens in positions 3 and 4 only in an "xn--" label
// (RFC 5891 4.2.3.1 reserves them), and an "xn--" label must be valid IDNA
// under the registration profile and survive the round trip. Beyond what
// Boulder checks, its Unicode form must be written in one script (Latin
// with the Han, kana and Hangul of Japanese and Korean writing allowed
// together), which refuses the mixed-script homographs of a Latin name
// such as "аpple" with a Cyrillic "а".
func checkACMELabel(label string) error {
	if len(label) < 4 || label[2:4] != "--" {
		return nil
	}
	if !strings.HasPrefix(label, "xn--") {
		return fmt.Errorf("%w: hyphens in positions 3 and 4 are reserved for IDNA (xn--)", ErrInvalidName)
	}
	u, err := idna.Registration.ToUnicode(label)
	if err != nil {
		return fmt.Errorf("%w: not a valid internationalised label: %v", ErrInvalidName, err)
	}
	if a, err := idna.Registration.ToASCII(u); err != nil || a != label {
		return fmt.Errorf("%w: not the canonical form of an internationalised label", ErrInvalidName)
	}
	if err := checkScript(u); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidName, err)
	}
	return nil
}

// idnScripts are the scripts a label may be written in.
var idnScripts = func() map[string]*unicode.RangeTable {
	m := map[string]*unicode.RangeTable{}
	for name, t := range unicode.Scripts {
		if name != "Common" && name != "Inherited" {
			m[name] = t
		}
	}
	return m
}()

// cjk are the scripts written together in Chinese, Japanese and Korean,
// which one label may mix with each other and with Latin.
var cjk = map[string]bool{"Han": true, "Hiragana": true, "Katakana": true, "Hangul": true, "Bopomofo": true}

// checkScript refuses a Unicode label with a symbol or with letters of
// more than one script (the CJK combinations and Latin with them aside).
func checkScript(u string) error {
	seen := map[string]bool{}
	for _, r := range u {
		if r == '-' || unicode.IsDigit(r) && r < 0x80 {
			continue
		}
		if !unicode.In(r, unicode.L, unicode.M, unicode.N) {
			return fmt.Errorf("%q is not a letter", r)
		}
		if unicode.In(r, unicode.Inherited) {
			continue
		}
		found := false
		for name, t := range idnScripts {
			if unicode.Is(t, r) {
				seen[name], found = true, true
				break
			}
		}
		if !found {
			return fmt.Errorf("%q belongs to no script", r)
		}
	}
	other := 0
	for name := range seen {
		if !cjk[name] && name != "Latin" {
			other++
		}
	}
	if len(seen) <= 1 || other == 0 {
		// One script, or Latin and CJK scripts together.
		return nil
	}
	return fmt.Errorf("letters of several scripts (a homograph risk)")
}
