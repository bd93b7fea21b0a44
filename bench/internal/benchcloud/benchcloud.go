// Package benchcloud writes the Caddyfile of the cloud that the benchmarks
// start: the tunnel frontend and registration API of the zone box.test on
// loopback, a SQLite registry, quiet logs, and no subscribe rate limit
// (a benchmark subscribes from one address far faster than any real
// client may).
package benchcloud

import "fmt"

// Zone is the zone the benchmark cloud serves.
const Zone = "box.test"

// Caddyfile returns the config: admin, HTTP and HTTPS on the given
// loopback ports, the registry in dir, and extra lines inside the
// gatehouse app block (for example a tunnel { … } block).
func Caddyfile(adminPort, httpPort, httpsPort int, dir, extra string) []byte {
	return fmt.Appendf(nil, `{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	local_certs
	skip_install_trust
	persist_config off
	log {
		level ERROR
	}
	servers {
		protocols h1 h2
		listener_wrappers {
			gatehouse
			tls
		}
	}
	gatehouse {
		zone %s
		storage sqlite %s/registry.db
		rate_limit subscribe 1ns 1000000000
		%s
	}
}
api.%[4]s {
	gatehouse
}
*.%[4]s {
	gatehouse offline
}
`, adminPort, httpPort, httpsPort, Zone, dir, extra)
}
