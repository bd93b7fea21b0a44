package dnszone

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/miekg/dns"
)

func benchIndex(b *testing.B, n int) *Index {
	b.Helper()
	x := NewIndex()
	for i := range n {
		x.Put(&registry.Gateway{Name: fmt.Sprintf("gw-%07d", i), Mode: registry.ModeTunnel,
			LocalAddrs: []netip.Addr{netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})}}, nil)
	}
	return x
}

// BenchmarkAnswer is the cost of the query logic alone, without sockets.
func BenchmarkAnswer(b *testing.B) {
	x := benchIndex(b, 100000)
	h, err := NewHandler(testConfig(), x, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range []struct{ name, qname string }{
		{"A", "gw-0012345.box.example.org."},
		{"local", "local.gw-0012345.box.example.org."},
		{"NXDOMAIN", "gw-9999999.box.example.org."},
	} {
		b.Run(q.name, func(b *testing.B) {
			req := query(q.qname, dns.TypeA)
			req.SetEdns0(1232, false)
			b.ReportAllocs()
			for b.Loop() {
				h.Answer(req, netip.Addr{}, "udp")
			}
		})
	}
}

// BenchmarkIndexGet measures lookups with and without a writer replacing
// gateways as fast as it can: a lookup waits at most for one map
// assignment in one of 64 shards.
func BenchmarkIndexGet(b *testing.B) {
	const n = 100000
	x := benchIndex(b, n)
	names := make([]string, 1024)
	for i := range names {
		names[i] = fmt.Sprintf("gw-%07d", (i*7919)%n)
	}
	for _, writer := range []bool{false, true} {
		b.Run(fmt.Sprintf("writer=%v", writer), func(b *testing.B) {
			var stop atomic.Bool
			var puts atomic.Int64
			var wg sync.WaitGroup
			if writer {
				wg.Go(func() {
					for i := 0; !stop.Load(); i++ {
						x.Put(&registry.Gateway{Name: names[i%len(names)], Mode: registry.ModeDynamic,
							PublicV4: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})}, nil)
						puts.Add(1)
					}
				})
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, ok := x.get(names[i%len(names)]); !ok {
						b.Error("missing")
					}
					i++
				}
			})
			b.StopTimer()
			stop.Store(true)
			wg.Wait()
			if writer {
				b.ReportMetric(float64(puts.Load())/b.Elapsed().Seconds(), "puts/s")
			}
		})
	}
}

// BenchmarkPut is the cost of loading one typical gateway.
func BenchmarkPut(b *testing.B) {
	x := NewIndex()
	gws := make([]*registry.Gateway, 1<<16)
	for i := range gws {
		gws[i] = &registry.Gateway{Name: fmt.Sprintf("gw-%07d", i), Mode: registry.ModeTunnel,
			LocalAddrs: []netip.Addr{netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})}}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(gws) {
			x, i = NewIndex(), 0
		}
		x.Put(gws[i], nil)
		i++
	}
}

// BenchmarkAnswerSteering compares, in interleaved rounds, the answers of
// a handler with a Steering (memSteering, two live nodes) to those of the
// same handler's configuration, per question; it prints both costs per
// query and their ratio.
func BenchmarkAnswerSteering(b *testing.B) {
	x := benchIndex(b, 100000)
	plain, err := NewHandler(testConfig(), x, nil)
	if err != nil {
		b.Fatal(err)
	}
	steered, err := NewHandler(testConfig(), x, nil)
	if err != nil {
		b.Fatal(err)
	}
	s := twoNodes()
	s.holders["gw-0012345"] = addrs("192.0.2.1", "2001:db8:a::1")
	steered.SetSteering(s)
	for _, q := range []struct {
		name, qname string
		qtype       uint16
	}{
		{"held A", "gw-0012345.box.example.org.", dns.TypeA},
		{"unheld A", "gw-0054321.box.example.org.", dns.TypeA},
		{"local", "local.gw-0012345.box.example.org.", dns.TypeA},
		{"NXDOMAIN", "gw-9999999.box.example.org.", dns.TypeA},
		{"api", "api.box.example.org.", dns.TypeA},
		{"NS", "box.example.org.", dns.TypeNS},
	} {
		b.Run(q.name, func(b *testing.B) {
			req := query(q.qname, q.qtype)
			req.SetEdns0(1232, false)
			// One iteration is a round of chunk queries on each handler,
			// so that both see the same machine state.
			const chunk = 256
			var tPlain, tSteered time.Duration
			for b.Loop() {
				start := time.Now()
				for range chunk {
					plain.Answer(req, netip.Addr{}, "udp")
				}
				mid := time.Now()
				for range chunk {
					steered.Answer(req, netip.Addr{}, "udp")
				}
				tPlain += mid.Sub(start)
				tSteered += time.Since(mid)
			}
			n := float64(b.N * chunk)
			b.ReportMetric(float64(tPlain.Nanoseconds())/n, "config-ns/q")
			b.ReportMetric(float64(tSteered.Nanoseconds())/n, "steered-ns/q")
			b.ReportMetric(float64(tSteered)/float64(tPlain), "steered/config")
		})
	}
}
