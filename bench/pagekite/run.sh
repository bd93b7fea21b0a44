#!/usr/bin/env bash
# Benchmark of the PageKite frontend (issue 12): one HTTPS download of SIZE
# through one Debian pagekite kite to a local TLS file server, via
# Gatehouse's frontend (the Caddy build, token_seal_key set, the gateway
# registered with the kite's secret as its token) and via PageKite's own
# frontend (pagekite --isfrontend, the same kite name and secret), ROUNDS
# interleaved rounds, curl as the client (bench/pagekite/kitebench does the
# work). Prints the median throughput of each, the ratio gatehouse/pagekite
# (target >= 3x), and the CPU per GiB of each frontend and of each kite.
#
# Usage: bench/pagekite/run.sh
# Knobs: SIZE=268435456 ROUNDS=3 TIME_LIMIT=30m
#   UNCAPPED=true also runs PageKite's frontend with --select_loop_min_ms=0
#   (it pauses 5 ms per loop by design, which caps a tunnel's rate).
#   KITEBENCH_PROFILE=DIR writes DIR/cloud.pprof, a CPU profile of the
#   cloud during the first download through it (KITEBENCH_PROFILE_SECONDS, 5).
# Needs curl and pagekite (apt-get install curl pagekite).
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in curl pagekite; do
	command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install $tool" >&2; exit 1; }
done

tmp=$(mktemp -d)
pid=
# kitebench stops the cloud, the frontends and the kites it started when
# it ends or is interrupted (SIGINT, SIGTERM); this trap passes a signal
# that reached only this script on to it, and waits for it.
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" || true; fi; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
go build -o "$tmp/caddy" ./cmd/caddy
go build -o "$tmp/kitebench" ./bench/pagekite/kitebench

"$tmp/kitebench" -caddy "$tmp/caddy" -size "${SIZE:-268435456}" -rounds "${ROUNDS:-3}" \
	-time-limit "${TIME_LIMIT:-30m}" -profile "${KITEBENCH_PROFILE:-}" \
	-profile-seconds "${KITEBENCH_PROFILE_SECONDS:-5}" -uncapped="${UNCAPPED:-true}" &
pid=$!
status=0
wait "$pid" || status=$?
pid=
exit "$status"
