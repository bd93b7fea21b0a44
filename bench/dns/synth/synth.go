// Package synth makes the synthetic gateways of the DNS benchmarks, the
// same for the server that loads them and the generator of its queries.
// It is for benchmarks only.
package synth

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Zone is the zone the benchmarks serve.
const Zone = "box.example.org."

// seeded dates the challenge records: current ones, which the registry's
// sweeper keeps for its challenge lifetime (24h), unlike records dated
// 1970 that it deleted within a minute of the Caddy build's start.
var seeded = time.Now().UTC()

// Name is the i-th gateway's name: ten characters, the typical length.
func Name(i int) string { return fmt.Sprintf("gw-%07d", i) }

// Dynamic reports whether the i-th gateway is in dynamic mode (one in
// three); the others are in tunnel mode.
func Dynamic(i int) bool { return i%3 == 1 }

// HasChallenge reports whether the i-th gateway holds _acme-challenge TXT
// records (one in ten).
func HasChallenge(i int) bool { return i%10 == 0 }

// Gateway returns the i-th gateway. typical makes every gateway the
// typical one of the memory target: tunnel mode, a public IPv4, one LAN
// IPv4, no records.
func Gateway(i int, typical bool) (*registry.Gateway, []registry.Record) {
	g := &registry.Gateway{
		Name:       Name(i),
		Mode:       registry.ModeTunnel,
		PublicV4:   netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)}),
		LocalAddrs: []netip.Addr{netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})},
	}
	if typical {
		return g, nil
	}
	if Dynamic(i) {
		g.Mode = registry.ModeDynamic
		if i%2 == 0 {
			g.PublicV6 = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		}
	}
	var recs []registry.Record
	if HasChallenge(i) {
		for _, v := range []string{"challenge-a", "challenge-b"} {
			recs = append(recs, registry.Record{Subtree: registry.GatewaySubtree(g.Name), Owner: "_acme-challenge", Type: "TXT",
				Value: fmt.Sprintf("%s-%d-%s", v, i, "x8EzTyc3d9mHSZJUcZc7zXyhpT2D3oVNG2nVqAm"), Created: seeded})
		}
	}
	return g, recs
}
