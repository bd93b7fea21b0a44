package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestBurstThenRefill(t *testing.T) {
	l := New(time.Second, 3, 10)
	ip := netip.MustParseAddr("192.0.2.1")
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.Allow(ip, now); !ok {
			t.Fatalf("event %d refused inside the burst", i)
		}
	}
	ok, wait := l.Allow(ip, now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("fourth event: ok=%v wait=%v, want refused with wait in (0,1s]", ok, wait)
	}
	if ok, _ := l.Allow(netip.MustParseAddr("192.0.2.2"), now); !ok {
		t.Fatal("another client was limited by the first one's bucket")
	}
	if ok, _ := l.Allow(ip, now.Add(time.Second)); !ok {
		t.Fatal("no token after a refill period")
	}
}

func TestIPv6SharesSlash64(t *testing.T) {
	l := New(time.Hour, 1, 10)
	now := time.Unix(1000, 0)
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8::1"), now); !ok {
		t.Fatal("first refused")
	}
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8::ffff"), now); ok {
		t.Fatal("a neighbour in the same /64 escaped the limit")
	}
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8:0:1::1"), now); !ok {
		t.Fatal("another /64 was limited")
	}
}

func TestMemoryBounded(t *testing.T) {
	l := New(time.Second, 1, 100)
	now := time.Unix(1000, 0)
	for i := range 1000 {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		l.Allow(ip, now.Add(time.Duration(i)*time.Millisecond))
	}
	if n := l.Len(); n > 100 {
		t.Fatalf("%d keys tracked, bound is 100", n)
	}
}
