package tunnel

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

func TestMetaInitiatorRoundTrip(t *testing.T) {
	for _, m := range []Meta{
		{Gateway: "myhome", Client: netip.MustParseAddrPort("[2001:db8::1]:51000")},
		{Gateway: "office", Source: "home", Dest: netip.MustParseAddrPort("192.168.10.12:22"), Client: netip.MustParseAddrPort("127.0.0.1:40000")},
		{Gateway: "office", Source: "home", Dest: netip.MustParseAddrPort("[fd00::5]:8443")},
	} {
		init := m.Initiator()
		if got := MetaFromInitiator(init); got != m {
			t.Errorf("MetaFromInitiator(%+v) = %+v, want %+v", init, got, m)
		}
	}
}

// What a version 1 cloud sends on a forward's target leg: the source
// gateway in Gatename, no Source.
func TestMetaFromVersion1Initiator(t *testing.T) {
	m := MetaFromInitiator(Initiator{GUID: testGUID, Ip: "10.0.0.2", Port: 22, Gatename: "home", ClientAddr: "127.0.0.1:1234"})
	want := Meta{Source: "home", Dest: netip.MustParseAddrPort("10.0.0.2:22"), Client: netip.MustParseAddrPort("127.0.0.1:1234")}
	if m != want || !m.Forwarded() {
		t.Fatalf("got %+v, want %+v", m, want)
	}
	// Ingress is never read as a forward.
	if m := MetaFromInitiator(Initiator{GUID: testGUID, Gatename: "myhome"}); m.Forwarded() || m.Gateway != "myhome" {
		t.Fatalf("ingress read as %+v", m)
	}
}

// The cloud opens a forward's target leg with Gatename the target and
// Source the source. An agent of version 1 (the default until
// SetPeerVersion) receives the source in Gatename, as before; one that
// announced VersionSource receives both as they are.
func TestOpenSourceByPeerVersion(t *testing.T) {
	for _, tt := range []struct {
		peer     uint16
		gatename string
		source   string
	}{
		{0, "home", ""},
		{MinProtocolVersion, "home", ""},
		{VersionSource, "office", "home"},
	} {
		cloud, agent := pair(t, Config{}, Config{})
		if tt.peer != 0 {
			cloud.SetPeerVersion(tt.peer)
		}
		got := make(chan Initiator, 1)
		serve(t, agent, func(st *Stream) {
			got <- st.Initiator()
			st.Ack(false, "enough")
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sent := Meta{Gateway: "office", Source: "home", Dest: netip.MustParseAddrPort("10.0.0.2:22")}.Initiator()
		st, err := cloud.Open(ctx, sent)
		cancel()
		if err == nil {
			st.Close()
		}
		init := <-got
		if init.Gatename != tt.gatename || init.Source != tt.source {
			t.Errorf("peer version %d received Gatename %q Source %q, want %q %q", tt.peer, init.Gatename, init.Source, tt.gatename, tt.source)
		}
		if m := MetaFromInitiator(init); m.Source != "home" {
			t.Errorf("peer version %d reads source %q", tt.peer, m.Source)
		}
	}
}
