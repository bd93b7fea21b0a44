package pgstore

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

const (
	benchGateways = 100_000
	benchBatch    = 64
)

// seedBench fills a store in a fresh schema with benchGateways gateways
// through COPY (CreateGateway would take most of the run) and returns
// their token hashes and public addresses.
func seedBench(b *testing.B) (*Store, [][]byte, []netip.Addr) {
	b.Helper()
	dsn, schema := tempSchema(b)
	s := openIn(b, dsn, schema)
	tokens := make([][]byte, benchGateways)
	addrs := make([]netip.Addr, benchGateways)
	created := time.Now().Add(-time.Hour)
	rows := make([][]any, benchGateways)
	for i := range benchGateways {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], 0xc6330000+uint32(i)) // from 198.51.0.0
		addrs[i] = netip.AddrFrom4(a)
		tokens[i] = registry.HashToken(addrs[i].String())
		rows[i] = []any{"gw-" + addrs[i].String(), tokens[i], "tunnel", addrs[i].String(), "192.168.1.2", created}
	}
	_, err := s.pool.CopyFrom(b.Context(), pgx.Identifier{"gateways"},
		[]string{"name", "token_hash", "mode", "public_v4", "local_addrs", "created"}, pgx.CopyFromRows(rows))
	if err != nil {
		b.Fatal(err)
	}
	// Set the hint bits and statistics now, so the timed UPDATEs see a
	// table in steady state.
	if _, err := s.pool.Exec(b.Context(), `VACUUM ANALYZE gateways`); err != nil {
		b.Fatal(err)
	}
	return s, tokens, addrs
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
// 100,000 gateways: one transaction, one pipelined round trip of UPDATEs,
// one notification, one commit per batch.
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

// BenchmarkPingBatchParallel has several callers batching at once, as the
// nodes of a cluster do: PostgreSQL commits their transactions together.
func BenchmarkPingBatchParallel(b *testing.B) {
	s, tokens, addrs := seedBench(b)
	b.SetParallelism(4)
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
