#!/usr/bin/env bash
# DNS benchmark of modules/dnszone on loopback.
#
# 1. Memory and load time: zoneserver -measure loads MEASURE_N synthetic
#    gateways (the typical one of the target, then a mix) and prints the
#    heap held per gateway (target <= 400 bytes) and the load time.
# 2. Throughput, with two dnsperf query files over N gateways: "hit" (A,
#    local A, AAAA and _acme-challenge TXT of existing names) and "nx50"
#    (the same mix, half of it for names that do not exist). Targets:
#      fixed  miekg/dns answering one fixed A record: the library's ceiling;
#      zone   the real Handler and Server (zoneserver), rate limiting on
#             with a limit never reached so its cost is counted;
#      zone1  the same with miekg/dns's one-datagram-per-syscall UDP
#             reader instead of the batched loop (not in the default
#             TARGETS: add it to compare the two);
#      app    the Caddy build itself (./cmd/caddy) serving the same
#             gateways from a SQLite registry it loads at start;
#      pdns   PowerDNS (Debian pdns-server + pdns-backend-bind, default
#             caches) serving a zone file transferred (AXFR) from the app,
#             so both answer exactly the same records.
#    Before measuring, the script checks that zone, app and pdns give the
#    same rcode (and data/no data) to the first SAMPLE questions of each
#    file. Rounds interleave the targets; each round restarts them and,
#    with WARMUP=1, sends each file once before measuring it (PowerDNS's
#    packet cache is then warm, as in steady state). It
#    prints queries/s, latency, the server CPU time per answered query
#    (which other load on the machine does not skew) and RSS, then the
#    best of the rounds and the median of the per-round ratios to pdns.
#
# Requires dnsperf (Debian package dnsperf) and, for the pdns target,
# pdns_server with the bind backend (pdns-server, pdns-backend-bind); the
# target is skipped with a note when they are missing. Knobs (environment):
#   N=100000 QUERIES=200000 DURATION=8 CLIENTS=8 THREADS=1 OUTSTANDING=200
#   ROUNDS=3 MEASURE_N=1000000 SAMPLE=300 WARMUP=1 TARGETS="fixed zone app pdns"
set -euo pipefail

N=${N:-100000}
QUERIES=${QUERIES:-200000}
DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-1}
OUTSTANDING=${OUTSTANDING:-200}
ROUNDS=${ROUNDS:-3}
MEASURE_N=${MEASURE_N:-1000000}
SAMPLE=${SAMPLE:-300}
WARMUP=${WARMUP:-1}
TARGETS=${TARGETS:-fixed zone app pdns}
FIXED_ADDR=127.0.0.1:5301
ZONE_ADDR=127.0.0.1:5300
APP_ADDR=127.0.0.1:5302
APP_ADMIN=127.0.0.1:5303
PDNS_ADDR=127.0.0.1:5304
ZONE1_ADDR=127.0.0.1:5305

cd "$(dirname "$0")/../.."
command -v dnsperf >/dev/null || { echo "dnsperf not found: apt-get install dnsperf" >&2; exit 1; }
PDNS=$(command -v pdns_server || echo /usr/sbin/pdns_server)
if [[ " $TARGETS " == *" pdns "* ]] && { [[ ! -x $PDNS ]] || ! ls /usr/lib/*/pdns/libbindbackend.so >/dev/null 2>&1; }; then
	echo "pdns_server or its bind backend not found (apt-get install pdns-server pdns-backend-bind): pdns skipped" >&2
	TARGETS=${TARGETS/pdns/}
fi

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
			transfer_allow 127.0.0.1
		}
	}
}
CADDY

echo "== memory and load time, $MEASURE_N gateways"
"$work/zoneserver" -measure -typical -n "$MEASURE_N"
"$work/zoneserver" -measure -n "$MEASURE_N"

echo "== query files: $QUERIES queries over $N gateways"
"$work/genqueries" -n "$N" -count "$QUERIES" -nx 0 >"$work/q-hit.txt"
"$work/genqueries" -n "$N" -count "$QUERIES" -nx 0.5 >"$work/q-nx50.txt"
for f in hit nx50; do
	echo "   $f: $(awk '{print $2}' "$work/q-$f.txt" | sort | uniq -c | awk '{printf "%s %s  ", $2, $1}')"
done

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

# stop_server: SIGTERM, which every target takes as the signal to exit
# (pdns_server ignores SIGINT).
stop_server() {
	kill -TERM "$server_pid"
	wait "$server_pid" || true
	server_pid=""
}

# wait_dns ADDR: waits until ADDR answers the zone's SOA.
wait_dns() {
	for _ in $(seq 1 600); do
		dig @"${1%:*}" -p "${1#*:}" +time=1 +tries=1 +short box.example.org SOA 2>/dev/null | grep -q . && return 0
		kill -0 "$server_pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

start_app() {
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/app.log" 2>&1 &
	server_pid=$!
	wait_dns "$APP_ADDR" || { cat "$work/app.log" >&2; exit 1; }
}

# The PowerDNS baseline: its own config dir, in the foreground, the bind
# backend reading a zone file transferred from the app, every cache at its
# default (packet cache on).
write_pdns_config() {
	mkdir -p "$work/pdns"
	cat >"$work/pdns/named.conf" <<NAMED
zone "box.example.org" { type master; file "$work/pdns/zone"; };
NAMED
	cat >"$work/pdns/pdns.conf" <<PDNS
launch=bind
bind-config=$work/pdns/named.conf
local-address=${PDNS_ADDR%:*}
local-port=${PDNS_ADDR#*:}
daemon=no
guardian=no
disable-syslog=yes
socket-dir=$work/pdns
loglevel=3
webserver=no
api=no
PDNS
}

start_pdns() {
	"$PDNS" --config-dir="$work/pdns" >"$work/pdns.log" 2>&1 &
	server_pid=$!
	wait_dns "$PDNS_ADDR" || { cat "$work/pdns.log" >&2; exit 1; }
}

start_target() {
	case $1 in
	fixed) start_server "$work/fixed.log" "$work/fixedserver" -listen "$FIXED_ADDR" ;;
	zone) start_server "$work/zone.log" "$work/zoneserver" -n "$N" -listen "$ZONE_ADDR" ;;
	zone1) start_server "$work/zone1.log" "$work/zoneserver" -n "$N" -listen "$ZONE1_ADDR" -udp-readers -1 ;;
	app) start_app ;;
	pdns) start_pdns ;;
	esac
}

addr_of() {
	case $1 in
	fixed) echo "$FIXED_ADDR" ;;
	zone) echo "$ZONE_ADDR" ;;
	zone1) echo "$ZONE1_ADDR" ;;
	app) echo "$APP_ADDR" ;;
	pdns) echo "$PDNS_ADDR" ;;
	esac
}

# cpu_ticks PID: user+system CPU time of PID, in clock ticks.
cpu_ticks() {
	awk '{print $14 + $15}' "/proc/$1/stat"
}

rss_mb() {
	awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"
}

# perf ROUND NAME FILE: one dnsperf run against the server started last;
# appends "ROUND NAME FILE qps avg_ms max_ms lost cpu_us_per_query rss_mb"
# to results. The server's CPU time per answered query does not depend on
# how much CPU other processes take from the machine, unlike queries/s.
perf() {
	local round=$1 name=$2 file=$3 addr out="$work/dnsperf-$2-$3-$1.txt"
	addr=$(addr_of "$name")
	local before after
	before=$(cpu_ticks "$server_pid")
	dnsperf -s "${addr%:*}" -p "${addr#*:}" -d "$work/q-$file.txt" -l "$DURATION" \
		-c "$CLIENTS" -T "$THREADS" -q "$OUTSTANDING" -t 2 >"$out" 2>&1
	after=$(cpu_ticks "$server_pid")
	local qps avg max lost completed cpu rss
	qps=$(awk '/Queries per second:/ {print $4}' "$out")
	avg=$(awk '/Average Latency/ {print $4 * 1000}' "$out")
	max=$(awk '/Average Latency/ {gsub(/[(),]/, ""); print $8 * 1000}' "$out")
	lost=$(awk '/Queries lost:/ {print $3}' "$out")
	completed=$(awk '/Queries completed:/ {print $3}' "$out")
	cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$completed" 'BEGIN {print 1e6 * t / hz / n}')
	rss=$(rss_mb "$server_pid")
	printf '   %-5s %-4s %9.0f q/s  avg %6.3f ms  max %7.3f ms  lost %-4s CPU %5.2f us/query  RSS %4s MB\n' \
		"$name" "$file" "$qps" "$avg" "$max" "$lost" "$cpu" "$rss"
	echo "$round $name $file $qps $avg $max $lost $cpu $rss" >>"$work/results"
	grep -E 'Response codes' "$out" | sed 's/^ */            /' || true
}

# warm NAME FILE: one pass over the query file before measuring, when
# WARMUP=1, so that a server with a packet cache (pdns) is measured with
# it warm, as in steady state, and not mostly missing: a short run never
# repeats a question of the file otherwise.
warm() {
	[[ $WARMUP == 1 ]] || return 0
	local addr
	addr=$(addr_of "$1")
	dnsperf -s "${addr%:*}" -p "${addr#*:}" -d "$work/q-$2.txt" -n 1 \
		-c "$CLIENTS" -T "$THREADS" -q "$OUTSTANDING" -t 2 >/dev/null 2>&1
}

# The app serves the zone file of PowerDNS by AXFR: the same records.
if [[ " $TARGETS " == *" pdns "* ]]; then
	echo "== pdns zone file: AXFR from the app"
	write_pdns_config
	start_app
	dig @"${APP_ADDR%:*}" -p "${APP_ADDR#*:}" +nocmd +nostats +nocomments +onesoa box.example.org AXFR >"$work/pdns/zone"
	stop_server
	echo "   $(grep -vc '^;' "$work/pdns/zone") records"
fi

# Same work: the compared servers must agree on every sampled question.
echo "== rcode check: first $SAMPLE questions of each file"
for file in hit nx50; do
	ref=""
	for name in $TARGETS; do
		[[ $name == fixed ]] && continue
		start_target "$name"
		"$work/rcodes" -server "$(addr_of "$name")" -queries "$work/q-$file.txt" -n "$SAMPLE" >"$work/rcodes-$name-$file.txt"
		stop_server
		if [[ -z $ref ]]; then
			ref=$name
		elif ! diff -q "$work/rcodes-$ref-$file.txt" "$work/rcodes-$name-$file.txt" >/dev/null; then
			echo "   $file: $name and $ref disagree:" >&2
			diff "$work/rcodes-$ref-$file.txt" "$work/rcodes-$name-$file.txt" | head -10 >&2
			exit 1
		fi
	done
	echo "   $file: $(awk '{print $3}' "$work/rcodes-$ref-$file.txt" | sort | uniq -c | awk '{printf "%s %s  ", $2, $1}')same on $(echo ${TARGETS/fixed/})"
done

echo "== dnsperf: -l $DURATION -c $CLIENTS -T $THREADS -q $OUTSTANDING, $ROUNDS rounds, $(nproc) cores"
for round in $(seq 1 "$ROUNDS"); do
	for name in $TARGETS; do
		start_target "$name"
		for file in hit nx50; do
			warm "$name" "$file"
			perf "$round" "$name" "$file"
		done
		stop_server
	done
done

echo "== result (best of $ROUNDS; ratios: median of the per-round ratios)"
awk -v targets="$TARGETS" '
	{
		k = $2 " " $3
		if ($4 > best[k]) { best[k] = $4; avg[k] = $5 }
		if (!(k in cpu) || $8 < cpu[k]) cpu[k] = $8
		if ($9 > rss[$2]) rss[$2] = $9
		qps[$1 " " k] = $4; cpuq[$1 " " k] = $8
		if ($1 > rounds) rounds = $1
	}
	function median(a, n,   i, j, t) {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	END {
		nt = split(targets, t, " ")
		for (f = 1; f <= 2; f++) {
			file = f == 1 ? "hit" : "nx50"
			for (i = 1; i <= nt; i++) {
				k = t[i] " " file
				if (!(k in best)) continue
				printf "   %-5s %-4s %9.0f q/s (avg latency %.3f ms), %5.2f us CPU/query, RSS %s MB\n", t[i], file, best[k], avg[k], cpu[k], rss[t[i]]
			}
		}
		for (f = 1; f <= 2; f++) {
			file = f == 1 ? "hit" : "nx50"
			for (i = 1; i <= nt; i++) {
				if (t[i] == "pdns" || !((t[i] " " file) in best) || !(("pdns " file) in best)) continue
				delete rq; delete rc
				for (r = 1; r <= rounds; r++) {
					rq[r] = qps[r " " t[i] " " file] / qps[r " pdns " file]
					rc[r] = cpuq[r " " t[i] " " file] / cpuq[r " pdns " file]
				}
				printf "   %-5s/pdns %-4s queries/s %.2fx (target >= 1.2x), CPU/query %.2fx (target < 1)\n", t[i], file, median(rq, rounds), median(rc, rounds)
			}
		}
		if (("pdns hit" in best) && ("zone hit" in best))
			printf "   RSS zone/pdns %.2fx\n", rss["zone"] / rss["pdns"]
		if (("pdns hit" in best) && ("app hit" in best))
			printf "   RSS app/pdns %.2fx\n", rss["app"] / rss["pdns"]
		if (("fixed hit" in best) && ("zone hit" in best))
			printf "   zone/fixed queries/s (hit): %.1f%%\n", 100 * best["zone hit"] / best["fixed hit"]
	}' "$work/results"
