package benchcloud

import "fmt"

// ClusterNode describes one node of a benchmark cluster on loopback: every
// node uses the same ports on its own address.
type ClusterNode struct {
	Name, IP                         string
	Admin, HTTP, HTTPS, Link         int
	CertFile, KeyFile, CAFile, Lease string
}

// ClusterCaddyfile returns one node's config: the tunnel frontend and the
// registration API of Zone on n.IP, the registry in PostgreSQL (the DSN in
// the environment variable GATEHOUSE_PG), quiet logs, no subscribe rate
// limit, and the cluster section with link certificates from files.
func ClusterCaddyfile(n ClusterNode) []byte {
	return fmt.Appendf(nil, `{
	admin %[2]s:%[3]d {
		origins %[2]s:%[3]d
	}
	default_bind %[2]s
	http_port %[4]d
	https_port %[5]d
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
		zone %[6]s
		storage postgres {env.GATEHOUSE_PG}
		rate_limit subscribe 1ns 1000000000
		cluster {
			name %[1]s
			public_addresses %[2]s
			listen tcp/%[2]s:%[7]d
			lease %[8]s
			certificate %[9]s %[10]s
			ca %[11]s
		}
	}
}
api.%[6]s {
	gatehouse
}
*.%[6]s {
	gatehouse offline
}
`, n.Name, n.IP, n.Admin, n.HTTP, n.HTTPS, Zone, n.Link, n.Lease, n.CertFile, n.KeyFile, n.CAFile)
}
