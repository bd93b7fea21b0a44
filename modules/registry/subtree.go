package registry

import "fmt"

// Subtree is the owner of a set of records: one gateway (NAME.ZONE and
// every name below it) or the zone itself (the zone's own names, which
// belong to no gateway). Records are keyed by their subtree, so that the
// zone's records take the same path as a gateway's: the same store
// methods, the same events, the same index.
//
// It is a typed value rather than a reserved name because no string is
// safe from ever being a gateway's name in a later rule change, and a
// sentinel string would leak into logs, events and notifications. The zero
// Subtree names nothing; it is ResyncAll on Store.Changes.
type Subtree struct {
	gateway string
	zone    bool
}

// GatewaySubtree is the subtree of the named gateway.
func GatewaySubtree(name string) Subtree { return Subtree{gateway: name} }

// ZoneSubtree is the zone's own subtree.
func ZoneSubtree() Subtree { return Subtree{zone: true} }

// Gateway returns the gateway's name, and false for the zone or the zero
// Subtree.
func (s Subtree) Gateway() (string, bool) { return s.gateway, !s.zone && s.gateway != "" }

// IsZone reports whether s is the zone's own subtree.
func (s Subtree) IsZone() bool { return s.zone }

// IsZero reports whether s names no subtree.
func (s Subtree) IsZero() bool { return s == Subtree{} }

// String is for logs and errors.
func (s Subtree) String() string {
	switch {
	case s.zone:
		return "the zone"
	case s.gateway == "":
		return "no subtree"
	}
	return "gateway " + s.gateway
}

// ZoneChallenge is the owner, relative to the zone, of the zone's ACME
// DNS-01 challenge: _acme-challenge.ZONE. The zone's subtree accepts TXT
// records there and nothing else, so that the cloud can obtain its own
// wildcard certificate (*.ZONE) through the records API the gateways use;
// everything else at the apex is configuration.
const ZoneChallenge = "_acme-challenge"

// ErrNoSubtree is returned by stores for the zero Subtree.
var ErrNoSubtree = fmt.Errorf("no subtree named: %w", ErrInvalidInput)
