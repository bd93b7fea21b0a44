package dnszone

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := newLimiter(RRL{ResponsesPerSecond: 10, Window: time.Second, Slip: 2, IPv4PrefixLen: 24,
		IPv6PrefixLen: 56, MaxPrefixes: 1000, Exempt: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}})
	a := netip.MustParseAddr("192.0.2.1")
	var allowed, dropped, slipped int
	for range 40 {
		switch l.check(a) {
		case rrlAllow:
			allowed++
		case rrlDrop:
			dropped++
		case rrlSlip:
			slipped++
		}
	}
	// A burst of one second at 10/s, then every other limited one slips.
	if allowed < 10 || allowed > 11 || slipped != (40-allowed)/2 || dropped != 40-allowed-slipped {
		t.Errorf("allowed %d dropped %d slipped %d", allowed, dropped, slipped)
	}
	if l.check(netip.MustParseAddr("192.0.2.200")) == rrlAllow {
		t.Error("same /24 not limited")
	}
	if l.check(netip.MustParseAddr("192.0.3.1")) != rrlAllow {
		t.Error("other /24 limited")
	}
	if l.check(netip.MustParseAddr("2001:db8:0:ff::1")) != rrlAllow {
		t.Error("first v6 query limited")
	}
	for range 20 {
		l.check(netip.MustParseAddr("2001:db8:0:ff::1"))
	}
	if l.check(netip.MustParseAddr("2001:db8:0:ff:1::2")) == rrlAllow {
		t.Error("same /56 not limited")
	}
	for range 100 {
		if l.check(netip.MustParseAddr("198.51.100.7")) != rrlAllow {
			t.Fatal("exempt prefix limited")
		}
	}
	if l.check(netip.Addr{}) != rrlAllow {
		t.Error("unknown client limited")
	}
}

func TestLimiterRefills(t *testing.T) {
	l := newLimiter(RRL{ResponsesPerSecond: 1000, Window: 10 * time.Millisecond, Slip: -1,
		IPv4PrefixLen: 24, IPv6PrefixLen: 56, MaxPrefixes: 16})
	a := netip.MustParseAddr("192.0.2.1")
	for l.check(a) == rrlAllow {
	}
	if l.check(a) != rrlDrop {
		t.Fatal("slip -1 must drop")
	}
	time.Sleep(20 * time.Millisecond)
	if l.check(a) != rrlAllow {
		t.Error("bucket did not refill")
	}
}

func TestLimiterBoundedMemory(t *testing.T) {
	const limit = 160
	l := newLimiter(RRL{ResponsesPerSecond: 1, Window: time.Hour, Slip: 2,
		IPv4PrefixLen: 24, IPv6PrefixLen: 56, MaxPrefixes: limit})
	for i := range 100000 {
		l.check(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), 1}))
	}
	if n := l.size(); n > limit {
		t.Errorf("%d prefixes tracked, limit %d", n, limit)
	}
}
