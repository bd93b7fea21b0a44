package mdns

import (
	"io"
	"log"
	"net/netip"
	"testing"
	"time"

	hmdns "github.com/hashicorp/mdns"
	"github.com/miekg/dns"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

func TestZoneAnswersHostAndService(t *testing.T) {
	a := &Advertiser{Host: "gateway", Port: 8090}
	zone, err := a.Zone([]netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::10")})
	if err != nil {
		t.Fatal(err)
	}
	rrA := zone.Records(dns.Question{Name: "gateway.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	if len(rrA) != 1 || rrA[0].(*dns.A).A.String() != "192.168.1.10" {
		t.Fatalf("A gateway.local: %v", rrA)
	}
	rrAAAA := zone.Records(dns.Question{Name: "gateway.local.", Qtype: dns.TypeAAAA, Qclass: dns.ClassINET})
	if len(rrAAAA) != 1 || rrAAAA[0].(*dns.AAAA).AAAA.String() != "fd00::10" {
		t.Fatalf("AAAA gateway.local: %v", rrAAAA)
	}
	ptr := zone.Records(dns.Question{Name: "_http._tcp.local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET})
	found := false
	for _, rr := range ptr {
		if srv, ok := rr.(*dns.SRV); ok && srv.Port == 8090 && srv.Target == "gateway.local." {
			found = true
		}
	}
	if !found {
		t.Fatalf("service records: %v", ptr)
	}
	if _, err := a.Zone(nil); err == nil {
		t.Fatal("a zone without addresses")
	}
}

// The responder answers a real mDNS browse on this machine's multicast
// interface.
func TestAdvertiserAnswersABrowse(t *testing.T) {
	a := &Advertiser{Host: "gateway", Port: 8090}
	if err := a.Update([]netip.Addr{netip.MustParseAddr("192.0.2.77")}); err != nil {
		testtools.Missing(t, "multicast ("+err.Error()+")", "a network interface with multicast (CI has one)")
	}
	defer a.Close()
	for attempt := 0; attempt < 3; attempt++ {
		ch := make(chan *hmdns.ServiceEntry, 8)
		p := hmdns.DefaultParams(Service)
		p.Entries, p.Timeout, p.DisableIPv6 = ch, 2*time.Second, true
		p.Logger = log.New(io.Discard, "", 0)
		done := make(chan error, 1)
		go func() { done <- hmdns.Query(p); close(ch) }()
		found := false
		for e := range ch {
			if e.Port == 8090 && e.AddrV4.String() == "192.0.2.77" && e.Host == "gateway.local." {
				found = true
			}
		}
		if err := <-done; err != nil {
			testtools.Missing(t, "an mDNS browse ("+err.Error()+")", "a network interface with multicast (CI has one)")
		}
		if found {
			return
		}
	}
	t.Fatal("the advertisement was not found by a browse")
}
