#!/usr/bin/env bash
# Benchmark of a cluster of three cloud nodes on one PostgreSQL, on
# loopback (127.0.0.1, 127.0.0.2, 127.0.0.3, same ports), in one run
# (bench/cluster/clusterbench does the work):
#
# 1. Throughput of one HTTPS download of SIZE with curl through the node
#    that holds the gateway's tunnel and through another node that relays
#    it over the node-to-node link, ROUNDS interleaved rounds; the ratio
#    (target relayed >= 80% of direct).
# 2. p50/p99 latency of a small request both ways, interleaved request by
#    request, kept and new connections; what the relay adds (target
#    <= 150 µs at p50).
# 3. Recovery after kill -9 of the holding node, with one tunnel and with
#    two: time until a request through a surviving node succeeds again.
#
# Usage: bench/cluster/run.sh
# Knobs: SIZE=1073741824 ROUNDS=3 LATENCY_N=1000 SETUP_N=200
#   RECOVERY_ROUNDS=3 LEASE=3s TIME_LIMIT=15m
#   CPUPROFILE=DIR (CPU profiles of node-1 and node-2 during the last
#   relayed download, for go tool pprof)
#   PG (default $GATEHOUSE_TEST_POSTGRES, else the local test database;
#   the run creates a schema of its own and drops it). Needs curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v curl >/dev/null || { echo "curl not found: apt-get install curl" >&2; exit 1; }
pg=${PG:-${GATEHOUSE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/caddy" ./cmd/caddy
go build -o "$tmp/clusterbench" ./bench/cluster/clusterbench

"$tmp/clusterbench" -caddy "$tmp/caddy" -pg "$pg" \
	-size "${SIZE:-1073741824}" -rounds "${ROUNDS:-3}" \
	-latency-n "${LATENCY_N:-1000}" -setup-n "${SETUP_N:-200}" \
	-recovery-rounds "${RECOVERY_ROUNDS:-3}" -lease "${LEASE:-3s}" \
	-time-limit "${TIME_LIMIT:-15m}" -cpuprofile "${CPUPROFILE:-}"
