#!/usr/bin/env bash
# Builds ./caddy: Caddy plus every Gatehouse module, with the xcaddy and
# Caddy versions pinned in go.mod. Usage: ./xcaddy-build.sh [output]
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-./caddy}
module=$(go list -m)
caddy_version=$(go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
# xcaddy builds in a temporary module; CGO off gives a static binary.
CGO_ENABLED=${CGO_ENABLED:-0} XCADDY_SKIP_CLEANUP=0 \
	go tool xcaddy build "$caddy_version" --output "$out" --with "$module@v0.0.0=."
"$out" version
