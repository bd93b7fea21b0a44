// Command genqueries writes a dnsperf query file for the gateways of
// package synth: A, AAAA and TXT lookups that hit, and a share of names
// that do not exist.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/gatehouse-project/gatehouse/bench/dns/synth"
)

func main() {
	n := flag.Int("n", 100000, "gateways loaded in the server")
	count := flag.Int("count", 200000, "queries to write")
	nx := flag.Float64("nx", 0.3, "share of queries for names that do not exist")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	r := rand.New(rand.NewPCG(*seed, 0))
	w := bufio.NewWriter(os.Stdout)
	zone := strings.TrimSuffix(synth.Zone, ".")
	for range *count {
		if r.Float64() < *nx {
			fmt.Fprintf(w, "%s.%s A\n", synth.Name(*n+r.IntN(*n)), zone)
			continue
		}
		i := r.IntN(*n)
		switch k := r.IntN(10); {
		case k < 5:
			fmt.Fprintf(w, "%s.%s A\n", synth.Name(i), zone)
		case k < 7:
			fmt.Fprintf(w, "local.%s.%s A\n", synth.Name(i), zone)
		case k < 9:
			// AAAA: tunnel mode and dynamic with IPv6 answer, the rest
			// is NODATA, as in real traffic.
			fmt.Fprintf(w, "%s.%s AAAA\n", synth.Name(i), zone)
		default:
			i -= i % 10 // a gateway with challenge records
			fmt.Fprintf(w, "_acme-challenge.%s.%s TXT\n", synth.Name(i), zone)
		}
	}
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
}
