package dnszone

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

func TestPutAddressesKeepsRecords(t *testing.T) {
	x := NewIndex()
	g := &registry.Gateway{Name: "home", Mode: registry.ModeDynamic, PublicV4: netip.MustParseAddr("192.0.2.1")}
	recs := []registry.Record{{Subtree: registry.GatewaySubtree("home"), Owner: "_acme-challenge", Type: "TXT", Value: "v", TTL: time.Minute}}
	x.Put(g, recs)
	serial := x.Serial()

	same := *g
	x.PutAddresses(&same)
	if x.Serial() != serial {
		t.Fatal("an unchanged ping moved the serial")
	}
	moved := *g
	moved.PublicV4 = netip.MustParseAddr("192.0.2.2")
	x.PutAddresses(&moved)
	e, ok := x.get("home")
	if !ok || e.pub4 != [4]byte{192, 0, 2, 2} {
		t.Fatalf("address not updated: %+v", e)
	}
	if rs := e.recs(); len(rs) != 1 || rs[0].data != "v" {
		t.Fatalf("records lost by an address update: %+v", rs)
	}
	if x.Serial() == serial {
		t.Fatal("an address change did not move the serial")
	}
	expired := moved
	expired.Expired = true
	x.PutAddresses(&expired)
	if x.Has("home") || x.Len() != 0 {
		t.Fatal("an expired gateway stayed in the index")
	}
	x.PutAddresses(&moved)
	if !x.Has("HOME") || !slices.Equal(x.Names(), []string{"home"}) {
		t.Fatalf("names after re-adding: %v", x.Names())
	}
}
