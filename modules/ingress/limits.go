package ingress

import (
	"net/netip"
	"sync"
)

// limits counts the ingress streams held (from before the stream is opened
// until its relay ends) per gateway and per client prefix and gateway. A
// flood of connections from one client then takes at most its own share of
// a gateway, and the gateway's total stays below what its agent accepts,
// so that others still get through. Counts are exact and entries leave the
// maps at zero, so memory follows the connections in progress.
type limits struct {
	maxGateway, maxClient int
	bits4, bits6          int

	mu        sync.Mutex
	gateways  map[string]int
	clientsOf map[clientKey]int
}

// clientKey is one client prefix toward one gateway. prefix is invalid
// for a connection without an IP address (all such share one budget).
type clientKey struct {
	gateway string
	prefix  netip.Prefix
}

func newLimits(maxGateway, maxClient, bits4, bits6 int) *limits {
	return &limits{
		maxGateway: maxGateway, maxClient: maxClient, bits4: bits4, bits6: bits6,
		gateways: make(map[string]int), clientsOf: make(map[clientKey]int),
	}
}

// prefix is the client prefix of addr.
func (l *limits) prefix(addr netip.Addr) netip.Prefix {
	if !addr.IsValid() {
		return netip.Prefix{}
	}
	addr = addr.Unmap()
	bits := l.bits6
	if addr.Is4() {
		bits = l.bits4
	}
	p, _ := addr.WithZone("").Prefix(bits)
	return p
}

// acquire takes one stream of gateway for client. It returns a release
// function to call exactly once when the stream is done, or the reason
// of the refusal.
func (l *limits) acquire(gateway string, client netip.Addr) (release func(), reason string) {
	k := clientKey{gateway, l.prefix(client)}
	l.mu.Lock()
	defer l.mu.Unlock()
	// The client's own limit first: a flooder is told it is the one over.
	if l.clientsOf[k] >= l.maxClient {
		return nil, ReasonClientLimit
	}
	if l.gateways[gateway] >= l.maxGateway {
		return nil, ReasonGatewayLimit
	}
	l.clientsOf[k]++
	l.gateways[gateway]++
	var once sync.Once
	return func() { once.Do(func() { l.release(k) }) }, ""
}

func (l *limits) release(k clientKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clientsOf[k]--; l.clientsOf[k] <= 0 {
		delete(l.clientsOf, k)
	}
	if l.gateways[k.gateway]--; l.gateways[k.gateway] <= 0 {
		delete(l.gateways, k.gateway)
	}
}

// held reports the streams counted for gateway (tests and diagnostics).
func (l *limits) held(gateway string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gateways[gateway]
}
