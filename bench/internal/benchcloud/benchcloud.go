// Package benchcloud writes the Caddyfile of the cloud that the benchmarks
// start: the tunnel frontend and registration API of the zone box.test on
// loopback, a SQLite registry, quiet logs, and no subscribe rate limit
// (a benchmark subscribes from one address far faster than any real
// client may). Start runs it and waits until it answers.
package benchcloud

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gatehouse-project/gatehouse/bench/internal/procs"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

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

// Cloud is a running benchmark cloud.
type Cloud struct {
	Cmd         *exec.Cmd
	Dir         string
	Admin, HTTP int // loopback ports
	HTTPS       int
	Roots       *x509.CertPool // the cloud's local CA
	API         *http.Client   // to the HTTPS port, whatever the URL's host
}

// Start runs the cloud (the Caddy binary caddyBin) in g, with the config
// of Caddyfile (extra as there) and its state in g.Dir/name, env added to
// its environment, and waits up to 60 s until its API answers.
func Start(g *procs.Group, name, caddyBin, extra string, env ...string) (*Cloud, error) {
	dir := filepath.Join(g.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		p, err := cloudtest.FreeTCPPort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	c := &Cloud{Dir: dir, Admin: ports[0], HTTP: ports[1], HTTPS: ports[2]}
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, Caddyfile(c.Admin, c.HTTP, c.HTTPS, dir, extra), 0o600); err != nil {
		return nil, err
	}
	cmd, err := g.Start(name, append(cloudtest.CaddyEnv(dir), env...), caddyBin,
		"run", "--config", cfg, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}
	c.Cmd = cmd
	err = cloudtest.WaitFor("the cloud "+name+" to answer", 60*time.Second, 100*time.Millisecond, func() bool {
		if c.API == nil {
			// Caddy makes its local CA on the first start.
			pemBytes, err := os.ReadFile(cloudtest.LocalCARoot(dir))
			if err != nil {
				return false
			}
			c.Roots = x509.NewCertPool()
			c.Roots.AppendCertsFromPEM(pemBytes)
			c.API = &http.Client{Timeout: 10 * time.Second, Transport: c.Transport(&tls.Config{RootCAs: c.Roots})}
		}
		resp, err := c.API.Get(fmt.Sprintf("https://api.%s:%d/connectivity-check", Zone, c.HTTPS))
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Addr is the cloud's HTTPS address.
func (c *Cloud) Addr() string { return fmt.Sprintf("127.0.0.1:%d", c.HTTPS) }

// Transport connects to the cloud's HTTPS port whatever the URL's host.
func (c *Cloud) Transport(cfg *tls.Config) *http.Transport {
	addr := c.Addr()
	return &http.Transport{
		TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// Subscribe registers the gateway name and returns its token.
func (c *Cloud) Subscribe(name string) (string, error) {
	resp, err := c.API.Get(fmt.Sprintf("https://api.%s:%d/subscribe?name=%s", Zone, c.HTTPS, url.QueryEscape(name)))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sub struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&sub); err != nil || sub.Token == "" {
		return "", fmt.Errorf("subscribe %s: status %d: %v", name, resp.StatusCode, err)
	}
	return sub.Token, nil
}
