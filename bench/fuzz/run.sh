#!/usr/bin/env bash
# Runs every fuzz target of the module for real, one after another, and
# prints a table: target, executions, new interesting inputs, crash or not.
#
# Targets are found with `go test -list '^Fuzz'` in each package that has a
# `func Fuzz` in a test file (grep first, so that only those packages are
# compiled for the listing). Each runs with
#   go test -run '^$' -fuzz '^Name$' -fuzztime FUZZTIME -parallel PARALLEL ./pkg
# The seed corpus is the package's testdata/fuzz/Name (go test reads it,
# and writes a failing input there itself). New interesting inputs land in
# Go's fuzz cache, $(go env GOCACHE)/fuzz/PKG/Name, which persists across
# runs; COPY_CORPUS=1 also copies the ones this run found into
# testdata/fuzz/Name, to be committed.
#
# The executions are the last "execs: N" of go's progress lines; the new
# interesting inputs are the files added to the cache directory during the
# run. Each target's output is kept in OUT (default a temporary folder,
# printed at the end) for a crash's details.
#
# Usage: bench/fuzz/run.sh [TargetRegexp]
# Knobs: FUZZTIME=10m (per target; 10 minutes wants a quiet machine)
#   PARALLEL=$(nproc) COPY_CORPUS=0 OUT=DIR
set -uo pipefail
cd "$(dirname "$0")/../.."
filter=${1:-.}
fuzztime=${FUZZTIME:-10m}
parallel=${PARALLEL:-$(nproc)}
out=${OUT:-$(mktemp -d -t gatehouse-fuzz-XXXX)}
mkdir -p "$out"
cache="$(go env GOCACHE)/fuzz"
module=$(go list -m)

# Packages with a fuzz target, as import paths.
pkgs=$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./bench/frp/' |
	xargs -r -n1 dirname | sort -u | sed "s|^\.|$module|")
[ -n "$pkgs" ] || { echo "no fuzz targets found" >&2; exit 1; }

rows=()
crashes=0
for pkg in $pkgs; do
	dir=${pkg#"$module"}
	dir=.${dir}
	names=$(go test -list '^Fuzz' "$dir" | grep '^Fuzz' | grep -E -- "$filter")
	for name in $names; do
		cdir="$cache/$pkg/$name"
		before=$(find "$cdir" -type f 2>/dev/null | sort)
		log="$out/$(echo "$pkg" | tr / _)-$name.log"
		echo "== $pkg $name ($fuzztime)" >&2
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel "$parallel" "$dir" >"$log" 2>&1
		rc=$?
		execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n1 | awk '{print $2}')
		after=$(find "$cdir" -type f 2>/dev/null | sort)
		new=$(comm -13 <(echo "$before") <(echo "$after") | grep -c . || true)
		crash=no
		if [ "$rc" != 0 ]; then
			crash=yes
			crashes=$((crashes + 1))
			# go test wrote the failing input under testdata/fuzz/NAME itself.
			input=$(grep -o 'testdata/fuzz/[^ ]*' "$log" | head -n1)
			[ -n "$input" ] && crash="yes: $dir/$input"
			[ -z "$execs" ] && crash="yes (no fuzzing: see $log)"
		fi
		if [ "${COPY_CORPUS:-0}" = 1 ] && [ "$new" -gt 0 ]; then
			mkdir -p "$dir/testdata/fuzz/$name"
			comm -13 <(echo "$before") <(echo "$after") | xargs -r cp -t "$dir/testdata/fuzz/$name"
		fi
		rows+=("$(printf '%-45s %-22s %12s %8s  %s' "${dir#./}" "$name" "${execs:-0}" "$new" "$crash")")
	done
done

echo
echo "fuzztime $fuzztime per target, -parallel $parallel; logs in $out"
printf '%-45s %-22s %12s %8s  %s\n' package target execs new crash
for r in "${rows[@]}"; do echo "$r"; done
[ "$crashes" = 0 ]
