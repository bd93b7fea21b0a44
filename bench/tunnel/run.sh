#!/usr/bin/env bash
# Benchmark of the tunnel frontend against frp, on loopback, in one
# interleaved run (bench/tunnel/tunnelbench does the work). Paths: direct to
# the gateway's TLS server; Gatehouse with the agent in passthrough; Gatehouse
# with the agent terminating TLS and proxying to the app over HTTP (the
# agents run as processes of their own, gateway-agent/internal/benchagent:
# the gateway agent's proxy code); frp (frps https vhost, SNI
# passthrough, frpc with TLS to frps, defaults; pinned in bench/frp/go.mod);
# the floor (bench/tunnel/floorrelay: two relay processes, front and back,
# one TCP connection between them per client connection, each direction one
# read, one AES-128-GCM pass in place and one write per side, nothing else):
# about the least CPU per byte any userspace encrypted tunnel spends here,
# to show how far each path is from it and whether a target is beyond it.
#
# 1. Throughput of one HTTPS download of SIZE with curl (HTTP/2; HTTP1=1
#    makes it HTTP/1.1), ROUNDS rounds with the paths alternating in each; CPU time (user+system from /proc) of the
#    tunnel's processes per GiB; ratios to frp (targets >= 1.5x, <= 0.6x);
#    the floor's MB/s and CPU per GiB over frp's (the targets can only be
#    met if these are beyond them) and each Gatehouse path's over the floor's.
# 2. Added latency p50/p99 of a small request, kept and new connections,
#    the paths (the floor too) interleaved request by request; ratio to frp
#    (target <= 0.5x).
#    LATENCY_DETAIL=1 first runs each tunnel path alone and prints what one
#    request costs its processes (system calls, context switches, CPU);
#    TUNNELBENCH_TRACE=DIR does too, and writes Go execution traces of the
#    cloud and the passthrough agent during such a loop into DIR.
# 3. CONCURRENT downloads of CONCURRENT_SIZE at once per path: time, errors.
# 4. Cloud memory per idle stream and session (STREAMS over SESSIONS; 0
#    skips). TUNNELBENCH_PROFILE=DIR writes cloud.pprof and agent.pprof of
#    the first passthrough download (TUNNELBENCH_PROFILE_SECONDS, 2), or of
#    the terminating one with TUNNELBENCH_PROFILE_AGENT=terminate.
#
# Usage: bench/tunnel/run.sh
# Knobs: SIZE=268435456 ROUNDS=3 (0 skips the throughput part) LATENCY_N=1000 SETUP_N=200 CONCURRENT=200
#   CONCURRENT_SIZE=1048576 SESSIONS=100 STREAMS=10000 TIME_LIMIT=20m
#   FRP=1 (FRP=0 skips frp) FLOOR=1 (FLOOR=0 skips the floor) HTTP1=0;
#   TUNNEL_GOMAXPROCS=N runs the cloud, the agents, frps, frpc and the floor
#   relays with GOMAXPROCS=N. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v curl >/dev/null || { echo "curl not found: apt-get install curl" >&2; exit 1; }

need=$(( ${STREAMS:-10000} * 2 + 1000 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/caddy" ./cmd/caddy
go build -o "$tmp/tunnelbench" ./bench/tunnel/tunnelbench
# The agent process: the gateway agent's own proxy code (only code under
# gateway-agent/ may import it).
go build -o "$tmp/benchagent" ./gateway-agent/internal/benchagent
frp=
if [ "${FRP:-1}" != 0 ]; then
	# frp lives in a module of its own so that the main go.mod stays free of it.
	(cd bench/frp && go build -o "$tmp/" tool)
	frp=$tmp
fi
floor=
if [ "${FLOOR:-1}" != 0 ]; then
	go build -o "$tmp/floorrelay" ./bench/tunnel/floorrelay
	floor=$tmp/floorrelay
fi

"$tmp/tunnelbench" -caddy "$tmp/caddy" -agent "$tmp/benchagent" -frp "$frp" -floor "$floor" \
	-size "${SIZE:-268435456}" -rounds "${ROUNDS:-3}" \
	-latency-n "${LATENCY_N:-1000}" -setup-n "${SETUP_N:-200}" \
	-concurrent "${CONCURRENT:-200}" -concurrent-size "${CONCURRENT_SIZE:-1048576}" \
	-sessions "${SESSIONS:-100}" -streams "${STREAMS:-10000}" \
	-time-limit "${TIME_LIMIT:-20m}" -http1="$([ "${HTTP1:-0}" != 0 ] && echo true || echo false)"
