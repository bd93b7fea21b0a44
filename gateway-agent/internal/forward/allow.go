package forward

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalid wraps every configuration or request error of this package.
var ErrInvalid = errors.New("invalid forwarding")

// PortRange is an inclusive range of ports. In JSON it is a number (22) or
// a string ("22" or "8000-8100").
type PortRange struct {
	First, Last uint16
}

// ParsePortRange reads "22" or "8000-8100".
func ParsePortRange(s string) (PortRange, error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	first, err := parsePort(a)
	if err != nil {
		return PortRange{}, err
	}
	last := first
	if isRange {
		if last, err = parsePort(b); err != nil {
			return PortRange{}, err
		}
		if last < first {
			return PortRange{}, fmt.Errorf("%w: port range %q is backwards", ErrInvalid, s)
		}
	}
	return PortRange{First: first, Last: last}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w: %q is not a port (1-65535)", ErrInvalid, s)
	}
	return uint16(n), nil
}

// Contains reports whether port is in the range.
func (r PortRange) Contains(port uint16) bool { return port >= r.First && port <= r.Last }

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// MarshalJSON writes a single port as a number and a range as a string.
func (r PortRange) MarshalJSON() ([]byte, error) {
	if r.First == r.Last {
		return []byte(strconv.Itoa(int(r.First))), nil
	}
	return json.Marshal(r.String())
}

// UnmarshalJSON reads 22, "22" or "8000-8100".
func (r *PortRange) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	v, err := ParsePortRange(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// AllowRule lets the gateways From reach the internal destinations To on
// Ports.
type AllowRule struct {
	// To are the destinations: CIDR prefixes ("192.168.1.0/24") or single
	// addresses ("192.168.1.10"). Required.
	To []string `json:"to"`
	// Ports are ports (22) or inclusive ranges ("8000-8100"). Required:
	// "1-65535" says every port, on purpose.
	Ports []PortRange `json:"ports"`
	// From names the source gateways the rule is for; empty means any
	// gateway the cloud's own rules let through.
	From []string `json:"from,omitempty"`

	prefixes []netip.Prefix
}

// AllowList is the target side's list of internal destinations that other
// gateways may reach. It denies by default: an empty list refuses every
// forwarding. Compile it with Compile before use.
type AllowList []AllowRule

// Compile checks the rules and prepares them for Allows.
func (l AllowList) Compile() (AllowList, error) {
	out := make(AllowList, 0, len(l))
	for i, r := range l {
		if len(r.To) == 0 {
			return nil, fmt.Errorf("%w: allow rule %d: \"to\" is required (addresses or CIDR prefixes)", ErrInvalid, i)
		}
		if len(r.Ports) == 0 {
			return nil, fmt.Errorf("%w: allow rule %d: \"ports\" is required (\"1-65535\" for every port)", ErrInvalid, i)
		}
		r.prefixes = nil
		for _, s := range r.To {
			p, err := parseDestination(s)
			if err != nil {
				return nil, fmt.Errorf("%w: allow rule %d: %w", ErrInvalid, i, err)
			}
			r.prefixes = append(r.prefixes, p)
		}
		for _, pr := range r.Ports {
			if pr.First == 0 || pr.Last < pr.First {
				return nil, fmt.Errorf("%w: allow rule %d: bad port range %s", ErrInvalid, i, pr)
			}
		}
		for _, f := range r.From {
			if strings.TrimSpace(f) == "" {
				return nil, fmt.Errorf("%w: allow rule %d: empty gateway name in \"from\"", ErrInvalid, i)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func parseDestination(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix: %w", s, err)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zones are not supported", s)
		}
		// Requests are unmapped before matching, so a rule written
		// as ::ffff:a.b.c.d/N means the IPv4 prefix a.b.c.d/(N-96).
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix: %w", s, err)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: zones are not supported", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Destination normalises a requested destination once, for both the
// allow-list and the dial: an IPv4-mapped address is unmapped first, so
// that every later check sees the address the kernel will connect to
// (::ffff:0.0.0.0 is 0.0.0.0, which reaches the gateway's own loopback).
// It refuses addresses that do not name one remote host: invalid, zoned,
// unspecified, in 0.0.0.0/8 ("this network"), multicast or the limited
// broadcast address.
func Destination(ip netip.Addr) (netip.Addr, bool) {
	if !ip.IsValid() || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		(ip.Is4() && ip.As4()[0] == 0) {
		return netip.Addr{}, false
	}
	return ip, true
}

// Allows reports whether gateway from may reach ip:port. Addresses that do
// not name one host (see Destination) never match, however written:
// dialling 0.0.0.0 reaches the gateway itself, whatever the rules meant.
func (l AllowList) Allows(from string, ip netip.Addr, port uint16) bool {
	_, ok := l.Check(from, ip, port)
	return ok
}

// Check is Allows that also returns the normalised destination, the one
// to dial: the address checked is the address connected to.
func (l AllowList) Check(from string, ip netip.Addr, port uint16) (netip.Addr, bool) {
	ip, ok := Destination(ip)
	if !ok {
		return netip.Addr{}, false
	}
	for _, r := range l {
		if r.matches(from, ip, port) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (r *AllowRule) matches(from string, ip netip.Addr, port uint16) bool {
	if len(r.From) > 0 && !containsFold(r.From, from) {
		return false
	}
	portOK := false
	for _, pr := range r.Ports {
		if pr.Contains(port) {
			portOK = true
			break
		}
	}
	if !portOK {
		return false
	}
	for _, p := range r.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(strings.TrimSpace(v), s) {
			return true
		}
	}
	return false
}
