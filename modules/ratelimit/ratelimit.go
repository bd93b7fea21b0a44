// Package ratelimit keeps one token bucket per client key (an IP address
// or prefix) with bounded memory. It is for guarding endpoints that send
// mail or create names; it is not a traffic shaper.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter allows Burst events at once and then one every Every per key.
type Limiter struct {
	every time.Duration
	burst int
	max   int

	mu      sync.Mutex
	buckets map[netip.Prefix]*entry
}

type entry struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a limiter allowing burst events, then one per every, per key.
// maxKeys bounds memory: past it, idle keys are dropped first.
func New(every time.Duration, burst, maxKeys int) *Limiter {
	if maxKeys <= 0 {
		maxKeys = 100_000
	}
	return &Limiter{every: every, burst: max(burst, 1), max: maxKeys, buckets: map[netip.Prefix]*entry{}}
}

// Key groups an address with its neighbours: one IPv4 address, or the /64
// an IPv6 host can freely roam in.
func Key(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p
	}
	p, _ := ip.Prefix(32)
	return p
}

// Allow takes one token for ip; when none is left it returns false and how
// long until one will be.
func (l *Limiter) Allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	if l == nil || l.every <= 0 {
		return true, 0
	}
	key := Key(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.buckets[key]
	if e == nil {
		if len(l.buckets) >= l.max {
			l.sweep(now)
		}
		e = &entry{lim: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.buckets[key] = e
	}
	e.seen = now
	r := e.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops buckets that have refilled (idle long enough to be full), and
// if that is not enough, the least recently seen half.
func (l *Limiter) sweep(now time.Time) {
	full := l.every * time.Duration(l.burst)
	for k, e := range l.buckets {
		if now.Sub(e.seen) >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < l.max {
		return
	}
	cut := now.Add(-full / 2)
	for k, e := range l.buckets {
		if e.seen.Before(cut) || len(l.buckets) >= l.max {
			delete(l.buckets, k)
		}
	}
}

// Len returns how many keys are tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
