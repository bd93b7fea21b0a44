package netinfo

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

const route = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
wlan0	00000000	0101A8C0	0003	0	0	600	00000000	0	0	0
eth0	00000000	010200C0	0003	0	0	100	00000000	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
`

func TestParseRoute(t *testing.T) {
	if got := parseRoute(strings.NewReader(route)); got != "eth0" {
		t.Fatalf("default route interface: %q", got)
	}
	if got := parseRoute(strings.NewReader("Iface\tDestination\n")); got != "" {
		t.Fatalf("no default route: %q", got)
	}
}

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

var ifs = []Iface{
	{Name: "lo", Loop: true, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
	{Name: "docker0", MAC: mac("02:42:00:00:00:01"), Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("172.17.0.1/16")}},
	{Name: "eth0", MAC: mac("02:fc:00:00:00:01"), Up: true, Addrs: []netip.Prefix{
		netip.MustParsePrefix("fe80::1/64"), netip.MustParsePrefix("fd00::2/64"), netip.MustParsePrefix("192.0.2.2/24")}},
}

func TestChooseInterface(t *testing.T) {
	if i, err := ChooseInterface(ifs, "eth0"); err != nil || i.Name != "eth0" {
		t.Fatalf("default route: %v %v", i.Name, err)
	}
	if i, err := ChooseInterface(ifs, ""); err != nil || i.Name != "docker0" {
		t.Fatalf("fallback to the first usable: %v %v", i.Name, err)
	}
	if _, err := ChooseInterface(ifs[:1], ""); err != ErrNoMAC {
		t.Fatalf("loopback only: %v", err)
	}
}

func TestPickAddrs(t *testing.T) {
	got := PickAddrs(ifs, "eth0")
	want := []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("fd00::2")}
	if !slices.Equal(got, want) {
		t.Fatalf("default route addresses: %v", got)
	}
	if got := PickAddrs(ifs, "wlan9"); len(got) != 3 || got[0] != netip.MustParseAddr("172.17.0.1") {
		t.Fatalf("all interfaces when the route's is unknown: %v", got)
	}
}
