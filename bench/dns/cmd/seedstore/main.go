// Command seedstore writes the benchmark's synthetic gateways (package
// synth) into a SQLite registry, so that dnsperf can ask the real Caddy app
// the same questions it asks zoneserver.
package main

import (
	"context"
	"flag"
	"log"
	"time"

	"github.com/gatehouse-project/gatehouse/bench/dns/synth"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

func main() {
	n := flag.Int("n", 100000, "gateways to write")
	path := flag.String("path", "registry.db", "SQLite file")
	flag.Parse()
	ctx := context.Background()
	store, err := sqlitestore.Open(ctx, *path)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	start := time.Now()
	for i := range *n {
		g, recs := synth.Gateway(i, false)
		g.TokenHash = registry.HashToken(g.Name)
		if err := store.CreateGateway(ctx, g, ""); err != nil {
			log.Fatal(err)
		}
		if len(recs) > 0 {
			if err := store.AppendRecords(ctx, registry.GatewaySubtree(g.Name), recs, registry.AtMost(64)); err != nil {
				log.Fatal(err)
			}
		}
	}
	log.Printf("seeded %d gateways in %s", *n, time.Since(start).Round(time.Millisecond))
}
