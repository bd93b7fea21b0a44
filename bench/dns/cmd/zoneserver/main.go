// Command zoneserver loads N synthetic gateways (package synth) into a
// dnszone.Index and serves them over UDP and TCP until interrupted; with
// -measure it reports the load time and the heap held per gateway instead,
// and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/gatehouse-project/gatehouse/bench/dns/synth"
	"github.com/gatehouse-project/gatehouse/modules/dnszone"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

func main() {
	n := flag.Int("n", 100000, "gateways to load")
	listen := flag.String("listen", "127.0.0.1:5300", "address to serve on, UDP and TCP")
	measure := flag.Bool("measure", false, "report load time and memory per gateway, then exit")
	typical := flag.Bool("typical", false, "make every gateway the typical one (tunnel, public v4, one LAN v4, no records)")
	rrlRate := flag.Float64("rrl-rate", 1e9, "responses per second per client prefix; 0 disables rate limiting")
	udpReaders := flag.Int("udp-readers", 0, "batched UDP readers per socket (0: one per core; -1: miekg/dns's reader, the path before batching)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the serving time to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	if *measure {
		measureLoad(*n, *typical)
		return
	}
	if err := serve(*n, *typical, *listen, *rrlRate, *udpReaders); err != nil {
		log.Print(err)
	}
}

type gw struct {
	g    *registry.Gateway
	recs []registry.Record
}

func measureLoad(n int, typical bool) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	// The gateways are made first so that the timing is the index's
	// alone; they are garbage once loaded, as a store's rows are.
	gws := make([]gw, n)
	for i := range gws {
		gws[i].g, gws[i].recs = synth.Gateway(i, typical)
	}
	start := time.Now()
	idx := dnszone.NewIndex()
	for _, x := range gws {
		idx.Put(x.g, x.recs)
	}
	load := time.Since(start)
	gws = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	fmt.Printf("gateways: %d (typical only: %v)\n", idx.Len(), typical)
	fmt.Printf("load time: %v (%.0f ns/gateway, %.0f gateways/s)\n", load.Round(time.Millisecond),
		float64(load.Nanoseconds())/float64(n), float64(n)/load.Seconds())
	fmt.Printf("heap held: %.1f MiB, %.1f bytes/gateway (HeapAlloc after GC minus baseline)\n",
		float64(held)/(1<<20), float64(held)/float64(n))
	runtime.KeepAlive(idx)
}

func serve(n int, typical bool, listen string, rrlRate float64, udpReaders int) error {
	idx := dnszone.NewIndex()
	start := time.Now()
	for i := range n {
		idx.Put(synth.Gateway(i, typical))
	}
	fmt.Printf("zoneserver: %d gateways loaded in %v\n", idx.Len(), time.Since(start).Round(time.Millisecond))
	cfg := dnszone.Config{
		Zone:        synth.Zone,
		Nameservers: []dnszone.Nameserver{{Name: "ns1." + synth.Zone, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}},
		TunnelAddrs: []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8::10")},
		RRL:         dnszone.RRL{ResponsesPerSecond: rrlRate, Window: time.Second, Disabled: rrlRate == 0},
	}
	h, err := dnszone.NewHandler(cfg, idx, nil)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return err
	}
	s := dnszone.NewServer(h, []net.PacketConn{pc}, []net.Listener{ln}, dnszone.ServerOptions{UDPReaders: udpReaders})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("zoneserver: serving udp+tcp/%s\n", pc.LocalAddr())
	err = s.Serve(ctx)
	st := h.Stats()
	fmt.Printf("zoneserver: udp %d tcp %d rcodes %v nodata %d truncated %d rate-limited %d panics %d\n",
		st.UDP, st.TCP, st.Rcodes, st.NoData, st.Truncated, st.RateLimited, st.Panics)
	return err
}
