package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// CloudOptions shape a test cloud.
type CloudOptions struct {
	// ExpireAfter is the gateway expiry (default 7d).
	ExpireAfter string
	// Tunnel adds the tunnel ingress (the gatehouse listener wrapper)
	// when the binary has it.
	Tunnel bool
	// SMTP is the address of a mail server for the email flows.
	SMTP string
	// Forward is the body of the forward block (agent-to-agent rules),
	// e.g. "allow gw2 gw1"; empty refuses every forwarding.
	Forward string
	// Gatehouse is more of the gatehouse block's Caddyfile, as is (the
	// custom domains' settings, for one).
	Gatehouse string
}

// Cloud is a running cloud: Caddy with the Gatehouse modules, serving
// api.box.test on HTTPS with Caddy's local CA and the zone's DNS.
type Cloud struct {
	*Process
	Dir       string
	HTTPSPort int
	DNSPort   int
	// TunnelIngress tells whether the listener wrapper is in (public
	// HTTPS for gateway names goes down their tunnel).
	TunnelIngress bool
}

// HasModule reports whether the caddy binary registers module id.
func HasModule(t testing.TB, caddy, id string) bool {
	t.Helper()
	out, err := exec.Command(caddy, "list-modules").Output()
	if err != nil {
		t.Fatalf("caddy list-modules: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) == id {
			return true
		}
	}
	return false
}

// ListenerModule is the tunnel ingress module's ID.
const ListenerModule = "caddy.listeners.gatehouse"

// StartCloud runs a cloud until the test ends.
func StartCloud(t testing.TB, o CloudOptions) *Cloud {
	t.Helper()
	bin := CaddyBinary(t)
	c := &Cloud{Dir: t.TempDir(), HTTPSPort: FreePort(t), DNSPort: FreePort(t)}
	expire := o.ExpireAfter
	if expire == "" {
		expire = "7d"
	}
	servers := ""
	if o.Tunnel && HasModule(t, bin, ListenerModule) {
		c.TunnelIngress = true
		servers = `servers {
		listener_wrappers {
			gatehouse
			tls
		}
	}`
	}
	email := ""
	if o.SMTP != "" {
		email = fmt.Sprintf(`email {
			smtp %s
			from "Gatehouse <noreply@box.test>"
			tls none
			api_url https://api.box.test:%d
		}`, o.SMTP, c.HTTPSPort)
	}
	forward := ""
	if o.Forward != "" {
		forward = "forward {\n" + o.Forward + "\n}"
	}
	cf := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	local_certs
	skip_install_trust
	%s
	gatehouse {
		zone box.test
		storage sqlite %s/registry.db
		expire_after %s
		dns {
			listen udp/127.0.0.1:%d tcp/127.0.0.1:%d
			nameserver ns1.box.test 127.0.0.1
			tunnel_address 127.0.0.1
			rrl off
		}
		tunnel {
			keepalive_interval 1s
			keepalive_timeout 4s
		}
		%s
		%s
		%s
	}
}
api.box.test {
	gatehouse
}
`, FreePort(t), FreePort(t), c.HTTPSPort, servers, c.Dir, expire, c.DNSPort, c.DNSPort, email, forward, o.Gatehouse)
	if err := os.WriteFile(filepath.Join(c.Dir, "Caddyfile"), []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	c.start(t, bin)
	return c
}

func (c *Cloud) start(t testing.TB, bin string) {
	c.Process = Start(t, "caddy", c.Dir, cloudtest.CaddyEnv(c.Dir), bin, "run", "--config", "Caddyfile", "--adapter", "caddyfile")
	testtools.Eventually(t, 60*time.Second, "the cloud to answer", func() bool {
		if c.Exited() {
			t.Fatalf("caddy exited:\n%s", c.Output())
		}
		if _, err := os.Stat(c.RootCA()); err != nil {
			return false
		}
		resp, err := c.Client(t).Get(c.API() + "/connectivity-check")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// Restart stops and starts the cloud on the same ports and data.
func (c *Cloud) Restart(t testing.TB) {
	c.Stop()
	c.start(t, CaddyBinary(t))
}

// API is the registration API's URL.
func (c *Cloud) API() string { return fmt.Sprintf("https://api.box.test:%d", c.HTTPSPort) }

// RootCA is the local CA root that signs the cloud's certificates.
func (c *Cloud) RootCA() string {
	return cloudtest.LocalCARoot(c.Dir)
}

// Client trusts the cloud's CA (and extra PEM roots) and connects every
// *.box.test name to 127.0.0.1.
func (c *Cloud) Client(t testing.TB, extraRoots ...[]byte) *http.Client {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(c.RootCA()); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	for _, r := range extraRoots {
		pool.AppendCertsFromPEM(r)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err == nil && (host == Zone || strings.HasSuffix(host, "."+Zone)) {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	if tt, ok := t.(*testing.T); ok {
		tt.Cleanup(tr.CloseIdleConnections)
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// AgentArgs are the flags that point an agent at this cloud and at pebble,
// with its state in stateDir.
func (c *Cloud) AgentArgs(p *Pebble, stateDir string) []string {
	return []string{
		"-cloud", c.API(), "-cloud-ca", c.RootCA(), "-resolve", "api.box.test=127.0.0.1",
		"-acme-ca", p.Directory, "-acme-root", p.RootFile,
		"-acme-resolvers", fmt.Sprintf("127.0.0.1:%d", c.DNSPort),
		"-state-dir", stateDir, "-mdns=false",
	}
}
