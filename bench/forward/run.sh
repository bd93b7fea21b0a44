#!/usr/bin/env bash
# Benchmark of agent-to-agent forwarding on loopback, printed as ratios
# measured in one run (bench/forward/forwardbench does the work): a client
# reaches a server through a forwarding (source agent → cloud → target
# agent → server) and directly, with
#
# 1. throughput: SIZE bytes downloaded and uploaded, median of ROUNDS;
# 2. the latency a small request/response gains, p50 and p99, over an
#    established connection (LATENCY_N) and with a new connection each time
#    (SETUP_N: the stream is opened through the cloud and the target dials).
#
# The cloud is the Caddy build with the Gatehouse modules and the agents are
# the real gateway-agent binary (passthrough mode, so no ACME CA is needed).
#
# Usage: bench/forward/run.sh
# Knobs (environment): SIZE=1073741824 ROUNDS=3 LATENCY_N=2000 SETUP_N=200
#   MSG=64 TIME_LIMIT=15m
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/caddy" ./cmd/caddy
CGO_ENABLED=0 go build -o "$tmp/gateway-agent" ./gateway-agent/cmd/gateway-agent
go build -o "$tmp/forwardbench" ./bench/forward/forwardbench

"$tmp/forwardbench" -caddy "$tmp/caddy" -agent "$tmp/gateway-agent" \
	-size "${SIZE:-1073741824}" -rounds "${ROUNDS:-3}" \
	-latency-n "${LATENCY_N:-2000}" -setup-n "${SETUP_N:-200}" -msg "${MSG:-64}" \
	-time-limit "${TIME_LIMIT:-15m}"
