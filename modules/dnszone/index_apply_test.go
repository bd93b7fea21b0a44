package dnszone

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/miekg/dns"
)

// The zone's own records: the operator's ACME challenge at
// _acme-challenge.ZONE, answered beside the static names and gateways.
func TestZoneRecords(t *testing.T) {
	h := testHandler(t)
	client := netip.MustParseAddr("192.0.2.1")
	ask := func(name string, qt uint16) *dns.Msg {
		t.Helper()
		return h.Answer(query(name, qt), client, "udp")
	}
	const chal = "_acme-challenge.box.example.org."
	if r := ask(chal, dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before any zone record: %s", dns.RcodeToString[r.Rcode])
	}

	serial := h.Index().Serial()
	putZone(h.Index(), []registry.Record{
		{Owner: "_acme-challenge", Type: "TXT", Value: "wild-one", TTL: time.Hour},
		{Owner: "_acme-challenge", Type: "TXT", Value: "wild-two"},
		{Owner: "_acme-challenge", Type: "TXT", Value: "wild-two"},
		// Never from the index: the apex and addresses are configuration.
		{Owner: "", Type: "TXT", Value: "apex"},
		{Owner: "_acme-challenge", Type: "A", Value: "192.0.2.66"},
		{Owner: "deep._x", Type: "TXT", Value: "deep"},
	})
	if h.Index().Serial() == serial {
		t.Error("Apply did not move the serial")
	}
	r := ask(chal, dns.TypeTXT)
	// The challenge TTL caps the stored one, as for a gateway's challenge.
	want := []string{chal + ` 60 TXT "wild-one"`, chal + ` 60 TXT "wild-two"`}
	if got := fmtRRs(r.Answer); r.Rcode != dns.RcodeSuccess || !r.Authoritative || !slices.Equal(got, want) {
		t.Fatalf("challenge TXT: %s %q, want %q", dns.RcodeToString[r.Rcode], got, want)
	}
	if r := ask(chal, dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("challenge A: want NODATA, got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if got := fmtRRs(ask("box.example.org.", dns.TypeTXT).Answer); !slices.Equal(got, []string{`box.example.org. 3600 TXT "v=spf1 -all"`}) {
		t.Errorf("apex TXT changed: %q", got)
	}
	if r := ask("_x.box.example.org.", dns.TypeTXT); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("empty non-terminal above a zone record: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if got := fmtRRs(ask("deep._x.box.example.org.", dns.TypeTXT).Answer); len(got) != 1 {
		t.Errorf("deeper zone record: %q", got)
	}
	// Gateways still answer, their own challenges included.
	if got := fmtRRs(ask("_acme-challenge.www.chal.box.example.org.", dns.TypeTXT).Answer); len(got) != 1 {
		t.Errorf("a gateway's challenge: %q", got)
	}
	if r := ask("tun.box.example.org.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("a gateway's address: %v", r.Answer)
	}

	// The same records again change nothing; none clears them.
	serial = h.Index().Serial()
	putZone(h.Index(), []registry.Record{
		{Owner: "_acme-challenge", Type: "TXT", Value: "wild-one", TTL: time.Hour},
		{Owner: "_acme-challenge", Type: "TXT", Value: "wild-two"},
		{Owner: "deep._x", Type: "TXT", Value: "deep"},
	})
	if h.Index().Serial() != serial {
		t.Error("Apply of the same records moved the serial")
	}
	putZone(h.Index(), nil)
	if r := ask(chal, dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("after clearing: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

func TestZoneRecordsInTransfer(t *testing.T) {
	h := testHandler(t, func(c *Config) { c.TransferAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	putZone(h.Index(), []registry.Record{{Owner: "_acme-challenge", Type: "TXT", Value: "wild"}})
	_, addr := startServer(t, h, ServerOptions{})
	env, err := (&dns.Transfer{}).In(query(testZone, dns.TypeAXFR), addr)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for e := range env {
		if e.Error != nil {
			t.Fatal(e.Error)
		}
		for _, rr := range e.RR {
			if rr.Header().Name == "_acme-challenge.box.example.org." {
				got = append(got, fmtRR(rr))
			}
		}
	}
	if want := []string{`_acme-challenge.box.example.org. 60 TXT "wild"`}; !slices.Equal(got, want) {
		t.Fatalf("zone records in the transfer: %q, want %q", got, want)
	}
}

// putZone applies the zone's records as the registry announces them.
func putZone(x *Index, recs []registry.Record) {
	x.Apply(registry.Event{Subtree: registry.ZoneSubtree(), Records: recs, RecordsChanged: true})
}

// Apply dispatches a gateway's events as the cloud relies on: a full
// state with records, addresses alone, or the name's removal.
func TestApplyGatewayEvents(t *testing.T) {
	x := NewIndex()
	s := registry.GatewaySubtree("home")
	g := &registry.Gateway{Name: "home", Mode: registry.ModeTunnel, LocalAddrs: []netip.Addr{netip.MustParseAddr("192.168.1.2")}}
	x.Apply(registry.Event{Subtree: s, Gateway: g, RecordsChanged: true,
		Records: []registry.Record{{Subtree: s, Owner: "www", Type: "TXT", Value: "v"}}})
	e, ok := x.get("home")
	if !ok || len(e.recs()) != 1 {
		t.Fatalf("after a full event: %+v, %v", e, ok)
	}
	moved := *g
	moved.LocalAddrs = []netip.Addr{netip.MustParseAddr("192.168.1.3")}
	x.Apply(registry.Event{Subtree: s, Gateway: &moved})
	if e, _ := x.get("home"); len(e.recs()) != 1 || e.loc4 != [4]byte{192, 168, 1, 3} {
		t.Errorf("an address event lost the records or kept the old address: %+v", e)
	}
	// A zone event never touches a gateway, nor the reverse.
	putZone(x, nil)
	if _, ok := x.get("home"); !ok || x.zone.Load() != nil {
		t.Error("a zone event touched a gateway")
	}
	x.Apply(registry.Event{Subtree: s, Revoked: true})
	if x.Has("home") || x.Len() != 0 {
		t.Error("a removal event left the gateway")
	}
	// The zero subtree names nothing and changes nothing.
	serial := x.Serial()
	x.Apply(registry.Event{RecordsChanged: true})
	if x.Serial() != serial {
		t.Error("an event without a subtree moved the serial")
	}
}
