// Package netinfo finds what the agent reports about its network: the MAC
// address its provisional name is derived from, and the LAN addresses it
// pings the cloud with.
//
// The default-route interface is read from /proc/net/route on Linux (the
// gateways the agent targets); elsewhere, and when that fails, the first
// interface that is up, not a loopback, and has both a MAC and an address is
// used. It does not watch for changes; the ping loop polls.
package netinfo

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// ErrNoMAC: no interface with a MAC address was found.
var ErrNoMAC = errors.New("no network interface with a MAC address")

// MaxAddrs is the most addresses reported (the cloud's limit).
const MaxAddrs = 8

// Iface is the part of net.Interface the choice needs, so tests can supply
// their own.
type Iface struct {
	Name  string
	MAC   net.HardwareAddr
	Up    bool
	Loop  bool
	Addrs []netip.Prefix
}

// Interfaces lists the system's interfaces.
func Interfaces() ([]Iface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]Iface, 0, len(ifs))
	for _, ifc := range ifs {
		it := Iface{Name: ifc.Name, MAC: ifc.HardwareAddr, Up: ifc.Flags&net.FlagUp != 0, Loop: ifc.Flags&net.FlagLoopback != 0}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if p, err := netip.ParsePrefix(n.String()); err == nil {
					it.Addrs = append(it.Addrs, p)
				}
			}
		}
		out = append(out, it)
	}
	return out, nil
}

// DefaultRouteInterface returns the name of the interface of the IPv4
// default route, from /proc/net/route; "" when unknown.
func DefaultRouteInterface() string {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return ""
	}
	defer f.Close()
	return parseRoute(f)
}

// parseRoute reads /proc/net/route: the default route has destination and
// mask 0; of several, the lowest metric wins.
func parseRoute(r io.Reader) string {
	best, bestMetric := "", -1
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		metric := 0
		for _, c := range f[6] {
			metric = metric*10 + int(c-'0')
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = f[0], metric
		}
	}
	return best
}

// ChooseInterface picks the interface whose MAC names the gateway: the
// default-route one if it has a MAC, else the first up, non-loopback
// interface with a MAC and an address, else any with a MAC.
func ChooseInterface(ifs []Iface, defaultRoute string) (Iface, error) {
	usable := func(i Iface) bool { return !i.Loop && len(i.MAC) == 6 && !allZero(i.MAC) }
	for _, i := range ifs {
		if i.Name == defaultRoute && usable(i) {
			return i, nil
		}
	}
	for _, i := range ifs {
		if usable(i) && i.Up && len(i.Addrs) > 0 {
			return i, nil
		}
	}
	for _, i := range ifs {
		if usable(i) {
			return i, nil
		}
	}
	return Iface{}, ErrNoMAC
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// MAC returns the MAC address of the gateway's interface.
func MAC() (string, error) {
	ifs, err := Interfaces()
	if err != nil {
		return "", err
	}
	i, err := ChooseInterface(ifs, DefaultRouteInterface())
	if err != nil {
		return "", err
	}
	return i.MAC.String(), nil
}

// LocalAddrs returns the LAN addresses to report: those of the gateway's
// interface (default route), or of every up, non-loopback interface when
// that one has none; link-local, loopback and multicast addresses left
// out, IPv4 first, at most MaxAddrs.
func LocalAddrs() ([]netip.Addr, error) {
	ifs, err := Interfaces()
	if err != nil {
		return nil, err
	}
	return PickAddrs(ifs, DefaultRouteInterface()), nil
}

// PickAddrs is LocalAddrs over given interfaces.
func PickAddrs(ifs []Iface, defaultRoute string) []netip.Addr {
	var out []netip.Addr
	collect := func(i Iface) {
		for _, p := range i.Addrs {
			a := p.Addr().Unmap()
			if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() {
				continue
			}
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	for _, i := range ifs {
		if i.Name == defaultRoute && i.Up {
			collect(i)
		}
	}
	if len(out) == 0 {
		for _, i := range ifs {
			if i.Up && !i.Loop {
				collect(i)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		switch {
		case a.Is4() && !b.Is4():
			return -1
		case !a.Is4() && b.Is4():
			return 1
		}
		return a.Compare(b)
	})
	if len(out) > MaxAddrs {
		out = out[:MaxAddrs]
	}
	return out
}
