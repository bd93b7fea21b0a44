package pinger

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestPingsAtOnceOnChangeAndRetries(t *testing.T) {
	var mu sync.Mutex
	addrs := []netip.Addr{netip.MustParseAddr("192.168.1.2")}
	var pings [][]netip.Addr
	fail := true
	got := make(chan struct{}, 100)
	trigger := make(chan struct{}, 1)
	l := &Loop{
		Interval: time.Hour, // only changes, failures and triggers ping here
		Watch:    20 * time.Millisecond,
		Trigger:  trigger,
		Addrs: func() ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			return addrs, nil
		},
		Ping: func(_ context.Context, a []netip.Addr) error {
			mu.Lock()
			defer mu.Unlock()
			pings = append(pings, a)
			got <- struct{}{}
			if fail {
				fail = false
				return errors.New("network down")
			}
			return nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	wait := func(what string) {
		t.Helper()
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("no ping: %s", what)
		}
	}
	wait("at start")
	wait("retry after the failure") // retryMin later
	mu.Lock()
	addrs = []netip.Addr{netip.MustParseAddr("192.168.1.3")}
	mu.Unlock()
	wait("address change")
	trigger <- struct{}{}
	wait("trigger")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pings) != 4 || pings[2][0] != netip.MustParseAddr("192.168.1.3") {
		t.Fatalf("pings: %v", pings)
	}
}
