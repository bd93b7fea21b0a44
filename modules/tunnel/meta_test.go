package tunnel

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
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

// Meta.initiator vouches for its addresses only when they parse back: the
// encoder then skips parsing them, and a frame the peer cannot decode
// would end the whole session. A zone is any string, so a zoned address is
// parsed as any other.
func TestMetaInitiatorTypedAddrs(t *testing.T) {
	addrs := []netip.AddrPort{
		{},
		netip.MustParseAddrPort("1.2.3.4:0"),
		netip.MustParseAddrPort("[::ffff:1.2.3.4]:65535"),
		netip.MustParseAddrPort("[2001:db8::1]:443"),
		netip.MustParseAddrPort("[fe80::1%eth0]:22"),
		netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone("a]:b"), 1),
		netip.AddrPortFrom(netip.IPv6Unspecified(), 1),
	}
	for _, client := range addrs {
		for _, dest := range addrs {
			m := Meta{Gateway: "g", Source: "s", Client: client, Dest: dest}
			init, typed := m.initiator()
			init.GUID = testGUID
			zoned := client.Addr().Zone() != "" || dest.Addr().Zone() != ""
			if typed == zoned {
				t.Errorf("%+v: typedAddrs %v", m, typed)
			}
			if typed {
				if err := init.validate(); err != nil {
					t.Errorf("%+v vouched for, but %v", m, err)
				}
				if MetaFromInitiator(init) != m {
					t.Errorf("%+v does not read back: %+v", m, MetaFromInitiator(init))
				}
			}
			// The same frame whether the encoder parses or not.
			want, werr := initiatorFrame(init, false)
			got, gerr := initiatorFrame(init, typed)
			if string(got) != string(want) || (werr == nil) != (gerr == nil) {
				t.Errorf("%+v: % x, %v; want % x, %v", m, got, gerr, want, werr)
			}
		}
	}
}

// OpenMeta sends the Initiator m.Initiator makes, with early data behind
// it, and refuses what Open refuses.
func TestOpenMeta(t *testing.T) {
	cloud, agent := pair(t, Config{}, Config{})
	cloud.SetPeerVersion(ProtocolVersion)
	got := make(chan Initiator, 1)
	serve(t, agent, func(st *Stream) {
		got <- st.Initiator()
		echo(st)
	})
	m := Meta{Gateway: "myhome", Client: netip.MustParseAddrPort("[2001:db8::1]:51000")}
	st, err := cloud.OpenMeta(testCtx(t), m, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	init := <-got
	if MetaFromInitiator(init) != m {
		t.Fatalf("agent read %+v from %+v", MetaFromInitiator(init), init)
	}
	p := make([]byte, 5)
	if _, err := io.ReadFull(st, p); err != nil || string(p) != "hello" {
		t.Fatalf("early data echoed as %q, %v", p, err)
	}
	long := Meta{Gateway: strings.Repeat("n", MaxNameLen+1)}
	if _, err := cloud.OpenMeta(testCtx(t), long, nil); !errors.Is(err, ErrProtocol) {
		t.Fatalf("OpenMeta of an over-long gateway name: %v", err)
	}
}
