// Package pinger reports the gateway to the cloud: a ping with its LAN
// addresses every interval, and at once when the addresses change (they
// are re-read every few seconds). A failed ping is retried sooner than the
// interval, with a growing delay, so a gateway that lost its network comes
// back quickly without hammering the cloud.
//
// It does not know the API; the caller's Ping function does.
package pinger

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// Loop pings until its context ends.
type Loop struct {
	// Interval between pings when nothing changes.
	Interval time.Duration
	// Watch is how often the addresses are re-read. Default 5s.
	Watch time.Duration
	// Addrs returns the current LAN addresses.
	Addrs func() ([]netip.Addr, error)
	// Ping sends one report.
	Ping func(ctx context.Context, addrs []netip.Addr) error
	// Trigger, when it receives, pings at once (a new name was chosen).
	Trigger <-chan struct{}
	// Logger receives failures.
	Logger *slog.Logger
}

// retryMin and retryMax bound the delay after a failed ping.
const (
	retryMin = 2 * time.Second
	retryMax = time.Minute
)

// Run pings at once, then as described above, until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	watch := l.Watch
	if watch <= 0 {
		watch = 5 * time.Second
	}
	var last []netip.Addr
	read := func() []netip.Addr {
		a, err := l.Addrs()
		if err != nil {
			log.Warn("reading local addresses", "error", err)
			return last
		}
		return a
	}
	addrs := read()
	retry := time.Duration(0)
	next := time.Now() // ping at once
	ticker := time.NewTicker(watch)
	defer ticker.Stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			if now := read(); !slices.Equal(now, addrs) {
				log.Info("local addresses changed", "from", addrs, "to", now)
				addrs = now
				next = time.Now()
			}
		case <-l.Trigger:
			next = time.Now()
		case <-timer.C:
		}
		if time.Now().Before(next) {
			timer.Reset(time.Until(next))
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := l.Ping(pctx, addrs)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			retry = min(max(2*retry, retryMin), retryMax, l.Interval)
			log.Warn("ping failed", "error", err, "retry_in", retry)
			next = time.Now().Add(retry)
		} else {
			retry = 0
			last = addrs
			next = time.Now().Add(l.Interval)
		}
		timer.Reset(time.Until(next))
	}
}
