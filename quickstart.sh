#!/usr/bin/env bash
# Quickstart: a whole Gatehouse system on one machine, with no root and no
# internet. It builds and starts
#   - the cloud (./cmd/caddy): registration API, DNS for box.localhost on
#     127.0.0.1:$QS_DNS, the tunnel frontend on https port $QS_HTTPS, and
#     its own ACME CA (Caddy's acme_server, DNS-01 checked against the
#     cloud's DNS);
#   - a small demo web app (the "gateway's" own app);
#   - the gateway agent in front of it, which registers, obtains its
#     certificate from the cloud's CA, and opens the tunnel;
# then prints the URL and the curl and dig commands that show the page
# arriving through the tunnel with the agent's own certificate.
# Ctrl-C stops everything.
#
#   ./quickstart.sh [work-dir]     (default: $TMPDIR/gatehouse-quickstart)
#
# Ports can be changed with QS_HTTPS, QS_HTTP, QS_DNS, QS_ADMIN, QS_SETUP,
# QS_LAN and QS_DEMO. QS_MAC sets the MAC the provisional name is derived
# from (default: the machine's).
set -euo pipefail
cd "$(dirname "$0")"

dir=${1:-${TMPDIR:-/tmp}/gatehouse-quickstart}
https=${QS_HTTPS:-18443} http=${QS_HTTP:-18080} dns=${QS_DNS:-15353} admin=${QS_ADMIN:-12999}
setup=${QS_SETUP:-18090} lan=${QS_LAN:-18444} demo=${QS_DEMO:-18081}
zone=box.localhost
mkdir -p "$dir/bin"

echo "building into $dir/bin ..."
CGO_ENABLED=0 go build -o "$dir/bin/caddy" ./cmd/caddy
CGO_ENABLED=0 go build -o "$dir/bin/gateway-agent" ./gateway-agent/cmd/gateway-agent
CGO_ENABLED=0 go build -o "$dir/bin/demo" ./gateway-agent/quickstart/demo

# The tunnel ingress needs the gatehouse listener wrapper.
wrappers=""
if "$dir/bin/caddy" list-modules | grep -qx 'caddy.listeners.gatehouse'; then
	wrappers="servers {
		listener_wrappers {
			gatehouse
			tls
		}
	}"
else
	echo "warning: this caddy has no caddy.listeners.gatehouse: no public ingress through the tunnel" >&2
fi

cat >"$dir/Caddyfile" <<CADDY
{
	admin 127.0.0.1:$admin
	http_port $http
	https_port $https
	local_certs
	skip_install_trust
	$wrappers
	gatehouse {
		zone $zone
		storage sqlite $dir/registry.db
		expire_after 7d
		dns {
			listen udp/127.0.0.1:$dns tcp/127.0.0.1:$dns
			nameserver ns1.$zone 127.0.0.1
			tunnel_address 127.0.0.1
		}
	}
}

# The registration API and the agents' tunnel endpoint.
api.$zone {
	gatehouse
}

# Gateways without a live tunnel: a "gateway offline" page.
*.$zone {
	tls internal
	gatehouse offline
}

# The cloud's own ACME CA for the agents (in production: Let's Encrypt).
# It checks DNS-01 challenges against the cloud's DNS.
localhost {
	acme_server {
		ca local
		challenges dns-01
		resolvers 127.0.0.1:$dns
		allow_wildcard_names
	}
}
CADDY

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config"
"$dir/bin/caddy" run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/cloud.log" 2>&1 &
pids+=($!)
root="$dir/data/caddy/pki/authorities/local/root.crt"
echo "starting the cloud (log: $dir/cloud.log) ..."
for _ in $(seq 120); do
	if [ -f "$root" ] && curl -fsS --cacert "$root" --resolve "api.$zone:$https:127.0.0.1" \
		"https://api.$zone:$https/connectivity-check" >/dev/null 2>&1; then
		break
	fi
	sleep 0.5
done
curl -fsS --cacert "$root" --resolve "api.$zone:$https:127.0.0.1" "https://api.$zone:$https/connectivity-check" >/dev/null

"$dir/bin/demo" -listen "127.0.0.1:$demo" >"$dir/demo.log" 2>&1 &
pids+=($!)

mac_flag=()
[ -n "${QS_MAC:-}" ] && mac_flag=(-mac "$QS_MAC")
"$dir/bin/gateway-agent" run \
	-cloud "https://api.$zone:$https" -cloud-ca "$root" -resolve "api.$zone=127.0.0.1" \
	-acme-ca "https://localhost:$https/acme/local/directory" -acme-root "$root" \
	-acme-resolvers "127.0.0.1:$dns" \
	-upstream "http://127.0.0.1:$demo" -state-dir "$dir/agent-state" \
	-https-listen "127.0.0.1:$lan" -setup-listen "127.0.0.1:$setup" -mdns=false \
	-local-addrs 127.0.0.1 -ping-interval 1m "${mac_flag[@]}" >"$dir/agent.log" 2>&1 &
pids+=($!)
echo "starting the agent (log: $dir/agent.log); waiting for its certificate and tunnel ..."

fqdn=""
for _ in $(seq 240); do
	st=$(curl -fsS "http://127.0.0.1:$setup/api/status" 2>/dev/null || true)
	fqdn=$(printf '%s' "$st" | sed -n 's/.*"fqdn": *"\([^"]*\)".*/\1/p')
	if [ -n "$fqdn" ] && printf '%s' "$st" | grep -q '"connected": *true' && printf '%s' "$st" | grep -q '"ready": *true'; then
		break
	fi
	fqdn=""
	sleep 0.5
done
if [ -z "$fqdn" ]; then
	echo "the agent did not get ready; its status:" >&2
	"$dir/bin/gateway-agent" status -setup-listen "127.0.0.1:$setup" -state-dir "$dir/agent-state" >&2 || true
	exit 1
fi

code=$(cat "$dir/agent-state/setup-code" 2>/dev/null || echo "see the agent status")
cat <<DONE

Gatehouse is running on this machine.

  gateway page (through the tunnel):  https://$fqdn:$https/
  setup page (choose a name):         http://127.0.0.1:$setup/
  setup code (the page asks for it):  $code

The page through the cloud's public port and the tunnel, TLS ending in the agent
(the certificate is the agent's own, for $fqdn, from the cloud's ACME CA):

  curl -v --cacert $root --resolve $fqdn:$https:127.0.0.1 https://$fqdn:$https/ 2>&1 | grep -E 'subjectAltName|issuer:|Hello|X-Forwarded-For'

The same app on the agent's LAN port, with the wildcard certificate:

  curl --cacert $root --resolve local.$fqdn:$lan:127.0.0.1 https://local.$fqdn:$lan/

DNS (the name points at the tunnel frontend, local. at the reported LAN address):

  dig @127.0.0.1 -p $dns +short $fqdn A
  dig @127.0.0.1 -p $dns +short local.$fqdn A

Agent status:  $dir/bin/gateway-agent status -setup-listen 127.0.0.1:$setup -state-dir $dir/agent-state
Rename:        $dir/bin/gateway-agent setup -setup-listen 127.0.0.1:$setup -state-dir $dir/agent-state -name myhome

Ctrl-C stops everything; $dir keeps the state for the next run.
DONE
wait
