package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

const (
	benchGateways = 100_000
	benchBatch    = 64
)

// seedBench fills a new store with benchGateways gateways in one
// transaction (going through CreateGateway would take most of the run) and
// returns their token hashes and public addresses.
func seedBench(b *testing.B) (*Store, [][]byte, []netip.Addr) {
	b.Helper()
	ctx := b.Context()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	tokens := make([][]byte, benchGateways)
	addrs := make([]netip.Addr, benchGateways)
	created := time.Now().Add(-time.Hour)
	err = s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, insertGatewaySQL)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i := range benchGateways {
			g, addr := benchGateway(i, created)
			tokens[i], addrs[i] = g.TokenHash, addr
			if _, err := stmt.ExecContext(ctx, gatewayArgs(g, 0)...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// Move the seed out of the WAL now; otherwise the first timed commit
	// pays for checkpointing the whole table.
	if _, err := s.writer.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		b.Fatal(err)
	}
	return s, tokens, addrs
}

func benchGateway(i int, created time.Time) (*registry.Gateway, netip.Addr) {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], 0xc6330000+uint32(i)) // from 198.51.0.0
	addr := netip.AddrFrom4(a)
	return &registry.Gateway{
		Name:       "gw-" + netip.AddrFrom4(a).String(),
		TokenHash:  registry.HashToken(addr.String()),
		Mode:       registry.ModeTunnel,
		PublicV4:   addr,
		LocalAddrs: []netip.Addr{netip.MustParseAddr("192.168.1.2")},
		Created:    created,
	}, addr
}

// benchPings fills batch with pings of random gateways, each from its own
// address, as steady-state traffic looks.
func benchPings(rng *rand.Rand, batch []registry.PingRequest, tokens [][]byte, addrs []netip.Addr) {
	now := time.Now()
	for j := range batch {
		k := rng.IntN(len(tokens))
		batch[j] = registry.PingRequest{TokenHash: tokens[k], At: now, PublicV4: addrs[k],
			LocalAddrs: []netip.Addr{netip.MustParseAddr("192.168.1.2")}}
	}
}

func checkPings(b *testing.B, res []registry.PingResult) {
	for _, r := range res {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}

// BenchmarkPingBatch measures one caller sending batches of 64 pings over
// 100,000 gateways: the store's group-commit ceiling.
func BenchmarkPingBatch(b *testing.B) {
	s, tokens, addrs := seedBench(b)
	rng := rand.New(rand.NewPCG(1, 2))
	batch := make([]registry.PingRequest, benchBatch)
	for b.Loop() {
		benchPings(rng, batch, tokens, addrs)
		checkPings(b, s.PingBatch(context.Background(), batch))
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "pings/s")
}

// BenchmarkPingBatchParallel has several callers batching at once; with one
// writer connection they queue, so this shows the cost of that queue.
func BenchmarkPingBatchParallel(b *testing.B) {
	s, tokens, addrs := seedBench(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
		batch := make([]registry.PingRequest, benchBatch)
		for pb.Next() {
			benchPings(rng, batch, tokens, addrs)
			checkPings(b, s.PingBatch(context.Background(), batch))
		}
	})
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "pings/s")
}
