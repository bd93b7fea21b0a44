#!/usr/bin/env bash
# DNS benchmark of modules/dnszone on loopback.
#
# 1. Memory and load time: zoneserver -measure loads MEASURE_N synthetic
#    gateways (the typical one of the target, then a mix) and prints the
#    heap held per gateway (target <= 400 bytes) and the load time.
# 2. Throughput: dnsperf against fixedserver (miekg/dns answering one fixed
#    A record: the library's ceiling) and zoneserver (N gateways, the real
#    Handler and Server, rate limiting on with a limit never reached so its
#    cost is counted), with the same query file: A, local A, AAAA and
#    _acme-challenge TXT hits plus NX_SHARE of unknown names. Each server
#    runs ROUNDS times (alternating, best kept: the machine is shared), and
#    the script prints queries/s, latency and the ratio zone/fixed (target
#    >= 70%), and the server CPU time per answered query of each, which
#    other load on the machine does not skew. A third target, "app", is
#    the Caddy build itself (./cmd/caddy) with the gatehouse app serving
#    the same gateways from a SQLite registry it loads at start.
#
# Requires dnsperf (Debian package dnsperf). Knobs (environment):
#   N=100000 QUERIES=200000 NX_SHARE=0.3 DURATION=10 CLIENTS=8 THREADS=1
#   OUTSTANDING=200 ROUNDS=3 MEASURE_N=1000000
set -euo pipefail

N=${N:-100000}
QUERIES=${QUERIES:-200000}
NX_SHARE=${NX_SHARE:-0.3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-1}
OUTSTANDING=${OUTSTANDING:-200}
ROUNDS=${ROUNDS:-3}
MEASURE_N=${MEASURE_N:-1000000}
FIXED_ADDR=127.0.0.1:5301
ZONE_ADDR=127.0.0.1:5300
APP_ADDR=127.0.0.1:5302
APP_ADMIN=127.0.0.1:5303

cd "$(dirname "$0")/../.."
command -v dnsperf >/dev/null || { echo "dnsperf not found: apt-get install dnsperf" >&2; exit 1; }

work=$(mktemp -d)
server_pid=""
cleanup() {
	if [[ -n $server_pid ]]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

echo "== building"
go build -o "$work/" ./bench/dns/cmd/...
go build -o "$work/caddy" ./cmd/caddy

# The Caddy app: the same gateways in a SQLite registry, loaded at start,
# answered by the gatehouse app's DNS listeners.
"$work/seedstore" -n "$N" -path "$work/registry.db" 2>&1 | sed 's/^/   /'
cat >"$work/Caddyfile" <<CADDY
{
	admin $APP_ADMIN
	log {
		level ERROR
	}
	gatehouse {
		zone box.example.org
		storage sqlite $work/registry.db
		dns {
			listen udp/$APP_ADDR tcp/$APP_ADDR
			nameserver ns1.box.example.org 192.0.2.53
			tunnel_address 192.0.2.10 2001:db8::10
			rrl 1000000000
		}
	}
}
CADDY

echo "== memory and load time, $MEASURE_N gateways"
"$work/zoneserver" -measure -typical -n "$MEASURE_N"
"$work/zoneserver" -measure -n "$MEASURE_N"

echo "== query file: $QUERIES queries over $N gateways, ${NX_SHARE} NXDOMAIN"
"$work/genqueries" -n "$N" -count "$QUERIES" -nx "$NX_SHARE" >"$work/queries.txt"
awk '{print $2}' "$work/queries.txt" | sort | uniq -c | awk '{printf "   %s %s\n", $2, $1}'

# start_server LOG CMD...: runs CMD in the background and waits for its
# "serving" line.
start_server() {
	local log=$1
	shift
	"$@" >"$log" 2>&1 &
	server_pid=$!
	for _ in $(seq 1 300); do
		grep -q serving "$log" && return 0
		kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
		sleep 0.1
	done
	echo "server did not start" >&2
	cat "$log" >&2
	exit 1
}

stop_server() {
	kill -INT "$server_pid"
	wait "$server_pid" || true
	server_pid=""
}

# cpu_ticks PID: user+system CPU time of PID, in clock ticks.
cpu_ticks() {
	awk '{print $14 + $15}' "/proc/$1/stat"
}

# perf NAME ADDR: one dnsperf run against the server started last;
# appends "NAME qps avg_ms max_ms lost cpu_us_per_query" to results. The
# server's CPU time per answered query does not depend on how much CPU
# other processes take from the machine, unlike queries/s.
perf() {
	local name=$1 addr=$2 out="$work/dnsperf-$1-$RANDOM.txt"
	local before after
	before=$(cpu_ticks "$server_pid")
	dnsperf -s "${addr%:*}" -p "${addr#*:}" -d "$work/queries.txt" -l "$DURATION" \
		-c "$CLIENTS" -T "$THREADS" -q "$OUTSTANDING" -t 2 >"$out" 2>&1
	after=$(cpu_ticks "$server_pid")
	local qps avg max lost completed cpu
	qps=$(awk '/Queries per second:/ {print $4}' "$out")
	avg=$(awk '/Average Latency/ {print $4 * 1000}' "$out")
	max=$(awk '/Average Latency/ {gsub(/[(),]/, ""); print $8 * 1000}' "$out")
	lost=$(awk '/Queries lost:/ {print $3}' "$out")
	completed=$(awk '/Queries completed:/ {print $3}' "$out")
	cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$completed" 'BEGIN {print 1e6 * t / hz / n}')
	printf '   %-6s %10.0f q/s  avg %6.3f ms  max %7.3f ms  lost %-4s server CPU %5.2f us/query\n' \
		"$name" "$qps" "$avg" "$max" "$lost" "$cpu"
	echo "$name $qps $avg $max $lost $cpu" >>"$work/results"
	grep -E 'Response codes' "$out" | sed 's/^ */   /' || true
}

echo "== dnsperf: -l $DURATION -c $CLIENTS -T $THREADS -q $OUTSTANDING, $ROUNDS rounds each, $(nproc) cores"
for round in $(seq 1 "$ROUNDS"); do
	start_server "$work/fixed.log" "$work/fixedserver" -listen "$FIXED_ADDR"
	perf fixed "$FIXED_ADDR"
	stop_server

	start_server "$work/zone.log" "$work/zoneserver" -n "$N" -listen "$ZONE_ADDR"
	perf zone "$ZONE_ADDR"
	stop_server
	grep -E 'loaded|rcodes' "$work/zone.log" | sed 's/^/   /'

	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/app.log" 2>&1 &
	server_pid=$!
	for _ in $(seq 1 300); do
		dig @"${APP_ADDR%:*}" -p "${APP_ADDR#*:}" +time=1 +tries=1 +short box.example.org SOA >/dev/null 2>&1 && break
		sleep 0.1
	done
	perf app "$APP_ADDR"
	stop_server
done

echo "== result (best of $ROUNDS)"
awk '
	{
		if ($2 > best[$1]) { best[$1] = $2; avg[$1] = $3 }
		if (!($1 in cpu) || $6 < cpu[$1]) cpu[$1] = $6
	}
	END {
		printf "   fixed: %.0f q/s (avg latency %.3f ms), %.2f us CPU/query\n", best["fixed"], avg["fixed"], cpu["fixed"]
		printf "   zone:  %.0f q/s (avg latency %.3f ms), %.2f us CPU/query\n", best["zone"], avg["zone"], cpu["zone"]
		printf "   app:   %.0f q/s (avg latency %.3f ms), %.2f us CPU/query (the Caddy build with the gatehouse app)\n", best["app"], avg["app"], cpu["app"]
		ratio_app = 100 * best["app"] / best["fixed"]
		printf "   app/fixed queries/s:         %.1f%% (target >= 70%%): %s\n", ratio_app, (ratio_app >= 70 ? "met" : "NOT met")
		ratio = 100 * best["zone"] / best["fixed"]
		eff = 100 * cpu["fixed"] / cpu["zone"]
		printf "   zone/fixed queries/s:        %.1f%% (target >= 70%%): %s\n", ratio, (ratio >= 70 ? "met" : "NOT met")
		printf "   zone/fixed per CPU-second:   %.1f%% (fixed CPU per query / zone CPU per query)\n", eff
	}' "$work/results"
