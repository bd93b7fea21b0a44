#!/usr/bin/env bash
# Benchmark of the tunnel frontend, on loopback, printed as ratios measured
# in one run (bench/tunnel/tunnelbench does the work):
#
# 1. Throughput: one HTTPS download of SIZE bytes with curl, through the
#    cloud and a tunnel, against the same download straight from the same
#    TLS server, and through PageKite (Debian's pagekite: a frontend and a
#    backend on loopback, TLS end to end through an HTTP CONNECT, since its
#    SNI routing crashes under Python 3). Median of ROUNDS. Target: tunnel
#    >= 50% of direct.
# 2. Latency a small request gains through the tunnel, p50 and p99, over an
#    established connection and with a new connection each time. Target:
#    p50 overhead <= 200 µs.
# 3. Cloud memory per idle stream (STREAMS over SESSIONS sessions; target
#    <= 32 KiB) and per idle session, in a fresh cloud.
#
# Usage: bench/tunnel/run.sh
# Knobs (environment): SIZE=1073741824 ROUNDS=3 LATENCY_N=2000 SETUP_N=300
#   SESSIONS=100 STREAMS=10000 TIME_LIMIT=20m PAGEKITE=/usr/bin/pagekite
#   (PAGEKITE= skips the baseline). Needs curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v curl >/dev/null || { echo "curl not found: apt-get install curl" >&2; exit 1; }

# The idle-stream run holds two descriptors per stream in this process and
# in the cloud.
need=$(( ${STREAMS:-10000} * 2 + 1000 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/caddy" ./cmd/caddy
go build -o "$tmp/tunnelbench" ./bench/tunnel/tunnelbench

"$tmp/tunnelbench" -caddy "$tmp/caddy" \
	-pagekite "${PAGEKITE-/usr/bin/pagekite}" \
	-size "${SIZE:-1073741824}" -rounds "${ROUNDS:-3}" \
	-latency-n "${LATENCY_N:-2000}" -setup-n "${SETUP_N:-300}" \
	-sessions "${SESSIONS:-100}" -streams "${STREAMS:-10000}" \
	-time-limit "${TIME_LIMIT:-20m}"
