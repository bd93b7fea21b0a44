// Command seed registers N gateways in a fresh Gatehouse store for the API
// benchmark and writes their tokens, one a line, for the load generator.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/pgstore"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

func main() {
	driver := flag.String("driver", "sqlite", "sqlite or postgres")
	path := flag.String("path", "", "SQLite file")
	dsn := flag.String("dsn", "", "PostgreSQL DSN")
	n := flag.Int("n", 100_000, "gateways to register")
	tokensOut := flag.String("tokens", "tokens.txt", "file for the tokens")
	public := flag.String("public", "", "public IPv4 address every gateway last pinged from (default: one per gateway in 198.51.0.0/16)")
	local := flag.String("local", "", "LAN address every gateway last reported (default: none)")
	flag.Parse()

	ctx := context.Background()
	var store registry.Store
	var err error
	workers := 1
	switch *driver {
	case "sqlite":
		store, err = sqlitestore.Open(ctx, *path)
	case "postgres":
		store, err = pgstore.Open(ctx, *dsn)
		workers = 16
	default:
		err = fmt.Errorf("unknown driver %q", *driver)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	tokens := make([]string, *n)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < *n; i += workers {
				tok, hash := registry.NewToken()
				tokens[i] = tok
				g := &registry.Gateway{
					Name: fmt.Sprintf("bench%07d", i), TokenHash: hash, Mode: registry.ModeTunnel,
					Created:  time.Now().UTC(),
					PublicV4: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}),
				}
				if *public != "" {
					g.PublicV4 = netip.MustParseAddr(*public)
				}
				if *local != "" {
					g.LocalAddrs = []netip.Addr{netip.MustParseAddr(*local)}
				}
				if err := store.CreateGateway(ctx, g, ""); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		log.Fatal(err)
	}
	f, err := os.Create(*tokensOut)
	if err != nil {
		log.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	for _, t := range tokens {
		fmt.Fprintln(bw, t)
	}
	if err := bw.Flush(); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	log.Printf("seeded %d gateways in %s", *n, time.Since(start).Round(time.Millisecond))
}
