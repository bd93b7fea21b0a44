package dnszone

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

type rrlAction uint8

const (
	rrlAllow rrlAction = iota
	rrlDrop
	rrlSlip
)

const rrlShards = 16

// limiter is a token bucket per client prefix, kept as one theoretical
// arrival time per prefix (GCRA): 24 bytes of state, no timer, no
// goroutine. A prefix whose bucket is full again is indistinguishable from
// an unknown one, which is what makes eviction free of consequences.
type limiter struct {
	// interval is the time one response costs; burst the time credit a
	// rested prefix holds (the window), both in nanoseconds.
	interval, burst int64
	// slip: every slip-th limited response is truncated, 0 never.
	slip           uint32
	v4bits, v6bits int
	perShard       int
	exempt         []netip.Prefix
	epoch          time.Time
	shards         [rrlShards]rrlShard
}

type rrlShard struct {
	mu sync.Mutex
	m  map[[16]byte]bucket
	_  [64]byte
}

type bucket struct {
	// tat is when the bucket is full again, in nanoseconds since epoch.
	tat     int64
	limited uint32
}

func newLimiter(c RRL) *limiter {
	l := &limiter{
		interval: max(int64(float64(time.Second)/c.ResponsesPerSecond), 1),
		burst:    int64(c.Window),
		v4bits:   c.IPv4PrefixLen,
		v6bits:   c.IPv6PrefixLen,
		perShard: max(c.MaxPrefixes/rrlShards, 1),
		exempt:   c.Exempt,
		epoch:    time.Now(),
	}
	// A bucket holds at least one response, whatever the window.
	l.burst = max(l.burst, l.interval)
	if c.Slip > 0 {
		l.slip = uint32(c.Slip)
	}
	for i := range l.shards {
		l.shards[i].m = make(map[[16]byte]bucket)
	}
	return l
}

// check spends one response of the client's prefix and says what to do.
func (l *limiter) check(client netip.Addr) rrlAction {
	if !client.IsValid() {
		return rrlAllow
	}
	for _, p := range l.exempt {
		if p.Contains(client) {
			return rrlAllow
		}
	}
	bits := l.v6bits
	if client.Is4() {
		bits = l.v4bits
	}
	p, err := client.Prefix(bits)
	if err != nil {
		return rrlAllow
	}
	key := p.Addr().As16()
	// Monotonic, so that a wall clock step neither frees nor blocks
	// everyone.
	now := int64(time.Since(l.epoch))
	s := &l.shards[shardOf(key)]
	s.mu.Lock()
	b, ok := s.m[key]
	if !ok && len(s.m) >= l.perShard {
		s.evict(now, l.perShard)
	}
	tat := max(b.tat, now)
	if tat+l.interval-now <= l.burst {
		b.tat = tat + l.interval
		s.m[key] = b
		s.mu.Unlock()
		return rrlAllow
	}
	b.limited++
	s.m[key] = b
	n := b.limited
	s.mu.Unlock()
	if l.slip > 0 && n%l.slip == 0 {
		return rrlSlip
	}
	return rrlDrop
}

// evict makes room: first the prefixes whose bucket is full again (they
// lose nothing), then, under a flood of distinct prefixes, half the shard
// at random, which only forgives some limited prefixes early.
func (s *rrlShard) evict(now int64, limit int) {
	for k, b := range s.m {
		if b.tat <= now {
			delete(s.m, k)
		}
	}
	for k := range s.m {
		if len(s.m) < limit/2+1 {
			break
		}
		delete(s.m, k)
	}
}

func shardOf(k [16]byte) int {
	x := binary.LittleEndian.Uint64(k[:8]) ^ binary.LittleEndian.Uint64(k[8:])
	x *= 0x9e3779b97f4a7c15
	return int(x >> 60)
}

// size returns the number of prefixes tracked, for tests.
func (l *limiter) size() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
