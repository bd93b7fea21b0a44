package registry

import (
	"fmt"
	"net"
	"regexp"
	"strings"
)

// MaxNameLength is the longest label DNS allows.
const MaxNameLength = 63

var nameRE = regexp.MustCompile(`^([a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$`)
var nsNameRE = regexp.MustCompile(`^ns[0-9]+$`)

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
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: only a-z, 0-9 and inner hyphens are allowed", ErrInvalidName)
	}
	if n.reserved[name] || nsNameRE.MatchString(name) {
		return fmt.Errorf("%w: %s", ErrReservedName, name)
	}
	return nil
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
