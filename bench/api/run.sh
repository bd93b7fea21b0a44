#!/usr/bin/env bash
# Benchmark of the registration API through the real Caddy handler:
# /ping and /subscribe on SQLite and on PostgreSQL, 50 concurrent clients,
# 100,000 registered gateways, each printed beside the same load against a
# Caddy `respond` handler in the same run (the ceiling of the HTTP path).
#
# The gateways are seeded as having last pinged with the addresses the load
# carries (127.0.0.1, LAN 192.168.1.20): the steady state, where a ping
# refreshes a gateway's time and confirms its addresses. A ping that moves
# a gateway to a new address also rewrites the address indexes; set
# STEADY=0 to seed other addresses and measure that case.
#
# Usage: bench/api/run.sh [seconds per run, default 10]
# ROUNDS (default 3): runs of each endpoint and of its ceiling, alternating;
# the medians are printed.
# Needs wrk (apt-get install wrk); PostgreSQL from GATEHOUSE_TEST_POSTGRES
# (skipped when unset).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
conns=50
gateways=${GATEHOUSE_BENCH_GATEWAYS:-100000}
port=18480
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }

tmp=$(mktemp -d)
caddy_pid=""
cleanup() { [ -n "$caddy_pid" ] && kill "$caddy_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

go build -o "$tmp/caddy" ./cmd/caddy
go build -o "$tmp/seed" ./bench/api/seed

# wrk_run NAME PATH [SCRIPT] prints "requests/s p99(ms)".
wrk_run() {
	local out
	out=$(ENDPOINT="$2" RUN="r$(date +%s%N)" TOKENS="$tmp/tokens.txt" wrk -t2 -c"$conns" -d"${secs}s" --latency ${3:+-s "$3"} "http://127.0.0.1:$port$2")
	local rps p99 non2xx
	rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
	p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
	non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
	if [ -n "$non2xx" ]; then echo "$1: $non2xx non-2xx answers" >&2; echo "$out" >&2; fi
	echo "$rps $p99"
}

# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# alternate CEILING_PATH PATH SCRIPT prints the medians over ROUNDS rounds:
# "ceiling_rps ceiling_p99 rps p99".
alternate() {
	local i c_rps=() c_p99=() rps=() p99=() r p
	for ((i = 0; i < ${ROUNDS:-3}; i++)); do
		read -r r p < <(wrk_run ceiling "$1" "$3")
		c_rps+=("$r") c_p99+=("$p")
		read -r r p < <(wrk_run "$2" "$2" "$3")
		rps+=("$r") p99+=("$p")
	done
	echo "$(printf '%s\n' "${c_rps[@]}" | median) $(printf '%s\n' "${c_p99[@]}" | median)" \
		"$(printf '%s\n' "${rps[@]}" | median) $(printf '%s\n' "${p99[@]}" | median)"
}

start_caddy() {
	cat >"$tmp/Caddyfile" <<CADDY
{
	admin off
	auto_https off
	persist_config off
	log {
		level ERROR
	}
	gatehouse {
		zone bench.example.org
		storage $1
		rate_limit subscribe 1ns 1000000000
	}
}
:$port {
	handle /ceiling* {
		respond "{}" 200
	}
	handle {
		gatehouse
	}
}
CADDY
	"$tmp/caddy" run --config "$tmp/Caddyfile" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
	caddy_pid=$!
	for _ in $(seq 100); do
		curl -fsS "http://127.0.0.1:$port/connectivity-check" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	cat "$tmp/caddy.log" >&2
	exit 1
}

stop_caddy() { kill "$caddy_pid"; wait "$caddy_pid" 2>/dev/null || true; caddy_pid=""; }

report() { # label rps p99 ceiling_rps
	awk -v l="$1" -v r="$2" -v p="$3" -v c="$4" 'BEGIN { printf "%-22s %10.0f req/s  p99 %7.2f ms  %5.1f%% of ceiling\n", l, r, p, 100*r/c }'
}

run_store() { # name storage-args seed-args
	echo "== $1: seeding $gateways gateways"
	local steady=()
	[ "${STEADY:-1}" = 1 ] && steady=(-public 127.0.0.1 -local 192.168.1.20)
	"$tmp/seed" $3 "${steady[@]}" -n "$gateways" -tokens "$tmp/tokens.txt" 2>&1 | sed 's/^/   /'
	start_caddy "$2"
	# Each endpoint's ceiling is the same requests, built by the same
	# script, answered by Caddy's respond handler. Ceiling and endpoint
	# alternate for ROUNDS rounds and each reports its median, so that a
	# burst of other work on the machine does not land on one side only.
	read -r cp_rps cp_p99 p_rps p_p99 < <(alternate /ceiling-ping /ping "$PWD/bench/api/ping.lua")
	read -r cs_rps cs_p99 s_rps s_p99 < <(alternate /ceiling-subscribe /subscribe "$PWD/bench/api/subscribe.lua")
	stop_caddy
	report "$1 respond, ping load" "$cp_rps" "$cp_p99" "$cp_rps"
	report "$1 /ping" "$p_rps" "$p_p99" "$cp_rps"
	report "$1 respond, sub. load" "$cs_rps" "$cs_p99" "$cs_rps"
	report "$1 /subscribe" "$s_rps" "$s_p99" "$cs_rps"
}

run_store sqlite "sqlite $tmp/registry.db" "-driver sqlite -path $tmp/registry.db"

if [ -n "${GATEHOUSE_TEST_POSTGRES:-}" ]; then
	schema="gh_bench_$RANDOM"
	sep='?'; [[ $GATEHOUSE_TEST_POSTGRES == *\?* ]] && sep='&'
	dsn="${GATEHOUSE_TEST_POSTGRES}${sep}search_path=$schema"
	psql "$GATEHOUSE_TEST_POSTGRES" -qc "CREATE SCHEMA $schema"
	run_store postgres "postgres \"$dsn\"" "-driver postgres -dsn $dsn"
	psql "$GATEHOUSE_TEST_POSTGRES" -qc "DROP SCHEMA $schema CASCADE"
else
	echo "GATEHOUSE_TEST_POSTGRES unset: PostgreSQL skipped"
fi
