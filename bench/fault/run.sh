#!/usr/bin/env bash
# Load-and-fault test of the cloud (bench/fault/faultload does the work):
# the cloud on SQLite, N gateways each with a tunnel session, kill -9 of the
# cloud while a writer subscribes in a loop, restart on the same store.
# Prints the cloud's RSS and open fds before and after, each client's
# reconnect time after the restart (p50, p99, max), and the acknowledged
# subscribes lost across the kill (must be 0; the run fails otherwise).
#
# Usage: bench/fault/run.sh
# Knobs: N=1000 WRITERS=4 WRITE_BEFORE=3s DOWN=0s TIME_LIMIT=10m
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${N:-1000}

# The cloud and this program each hold a descriptor per session and more.
need=$(( n * 3 + 1000 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/caddy" ./cmd/caddy
go build -o "$tmp/faultload" ./bench/fault/faultload

"$tmp/faultload" -caddy "$tmp/caddy" -n "$n" -writers "${WRITERS:-4}" \
	-write-before "${WRITE_BEFORE:-3s}" -down "${DOWN:-0s}" -time-limit "${TIME_LIMIT:-10m}"
