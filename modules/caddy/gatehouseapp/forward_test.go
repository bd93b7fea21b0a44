package gatehouseapp

import (
	"sync/atomic"
	"testing"

	"github.com/gatehouse-project/gatehouse/modules/forward"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// The hub hands agents' streams to the relay of the newest App: set once,
// the Handler follows reloads, and a closed hub is forgotten.
func TestUseRelayFollowsReloads(t *testing.T) {
	h := &hub.Hub{}
	first, second := &forward.Relay{}, &forward.Relay{}
	useRelay(h, first)
	if h.Handler() == nil {
		t.Fatal("the hub has no handler: agents' streams would be refused")
	}
	useRelay(h, second)
	v, ok := relays.Load(h)
	if !ok || v.(*atomic.Pointer[forward.Relay]).Load() != second {
		t.Fatal("the hub does not use the newest App's relay")
	}
	forgetRelay(h)
	if _, ok := relays.Load(h); ok {
		t.Fatal("a closed hub is still remembered")
	}
}

// An App provisioned with forwarding rules wires the relay into its hub.
func TestProvisionWiresForwarding(t *testing.T) {
	a := &App{Zone: "box.test", hub: &hub.Hub{}, Forward: &ForwardConfig{Rules: forward.Rules{{From: "gw2", To: "gw1"}}}}
	if err := a.provisionForward(nil); err != nil {
		t.Fatal(err)
	}
	defer forgetRelay(a.hub)
	if a.hub.Handler() == nil || a.relay == nil || !a.relay.Rules.Allows("gw2", "gw1", 22) {
		t.Fatalf("relay not wired: %+v", a.relay)
	}
	bad := &App{Zone: "box.test", hub: &hub.Hub{}, Forward: &ForwardConfig{Rules: forward.Rules{{From: "gw2"}}}}
	if err := bad.provisionForward(nil); err == nil {
		t.Fatal("an invalid rule was accepted")
	}
}
