// Package testenv starts the real programs the agent's tests run against:
// the cloud (Caddy with the Gatehouse modules, built from ./cmd/caddy or
// taken from GATEHOUSE_CADDY), Pebble as the ACME CA (built from the version
// pinned in go.mod), the agent binary, and headless Chromium driven with
// chromedp. Everything listens on loopback, ports are picked free, and each
// process is stopped when its test ends.
//
// It is for tests only. A missing external tool (chromium, dig, curl) skips
// the test locally and fails it in CI (internal/testtools).
package testenv

import (
	"bytes"
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
)

// Zone is the zone of the test clouds.
const Zone = "box.test"

// Main runs a test binary's tests, then removes the programs Build made.
// Packages that use Build call it from TestMain.
func Main(m *testing.M) { cloudtest.Main(m) }

// Build builds a package of the module once per test binary and returns the
// executable.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	return cloudtest.MustBuild(t, pkg, "CGO_ENABLED=0")
}

// CaddyBinary is GATEHOUSE_CADDY (CI's xcaddy build) or ./cmd/caddy built.
func CaddyBinary(t testing.TB) string {
	return cloudtest.MustCaddyBinary(t, "CGO_ENABLED=0")
}

// AgentBinary is the gateway agent built.
func AgentBinary(t testing.TB) string { return Build(t, "./gateway-agent/cmd/gateway-agent") }

// FreePort returns a port free a moment ago for TCP and UDP on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	return cloudtest.MustFreePort(t)
}

// Process is a program run for a test, its output kept.
type Process struct {
	t    testing.TB
	Name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output is what the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Start runs name with args in dir until Stop or the end of the test; the
// output is logged if the test failed.
func Start(t testing.TB, name, dir string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, Name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// Exited reports whether the process ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop interrupts the process and waits for it (killing it after 10s).
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill ends the process at once, as a power cut would.
func (p *Process) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// SelfSignedCert writes a certificate and key for 127.0.0.1 and localhost
// into dir, and returns their paths; the certificate is its own root.
func SelfSignedCert(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	c := testcert.MustSelfSigned(t, testcert.Options{
		Serial:      big.NewInt(time.Now().UnixNano()),
		Subject:     pkix.Name{CommonName: "gatehouse test"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c.MustWrite(t, certFile, keyFile)
	return certFile, keyFile
}

// Pebble is a running Pebble ACME CA.
type Pebble struct {
	*Process
	// Directory is the ACME directory URL.
	Directory string
	// RootFile verifies Pebble's own HTTPS (the directory), not the
	// certificates it issues: IssuedRoots has those.
	RootFile string
	mgmt     int
}

// StartPebble runs Pebble, checking DNS-01 challenges against dnsServer
// (host:port), issuing certificates valid for validity. alwaysValid skips
// the challenge checks (unit tests without a DNS server).
func StartPebble(t testing.TB, dnsServer string, validity time.Duration, alwaysValid bool) *Pebble {
	t.Helper()
	dir := t.TempDir()
	cert, key := SelfSignedCert(t, dir)
	port, mgmt := FreePort(t), FreePort(t)
	cfg := fmt.Sprintf(`{"pebble": {
		"listenAddress": "127.0.0.1:%d", "managementListenAddress": "127.0.0.1:%d",
		"certificate": %q, "privateKey": %q, "httpPort": %d, "tlsPort": %d,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter": {"authz": 1, "order": 1}, "keyAlgorithm": "ecdsa",
		"profiles": {"default": {"description": "test", "validityPeriod": %d}}}}`,
		port, mgmt, cert, key, FreePort(t), FreePort(t), int(validity/time.Second))
	if err := os.WriteFile(filepath.Join(dir, "pebble.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"}
	if alwaysValid {
		env = append(env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	bin := Build(t, "github.com/letsencrypt/pebble/v2/cmd/pebble")
	p := &Pebble{Directory: fmt.Sprintf("https://127.0.0.1:%d/dir", port), RootFile: cert, mgmt: mgmt}
	p.Process = Start(t, "pebble", dir, env, bin, "-config", "pebble.json", "-dnsserver", dnsServer)
	hc := p.mgmtClient()
	testtools.Eventually(t, 30*time.Second, "pebble to listen", func() bool {
		if p.Exited() {
			t.Fatalf("pebble exited:\n%s", p.Output())
		}
		resp, err := hc.Get(p.Directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

func (p *Pebble) mgmtClient() *http.Client {
	// Pebble's own listeners use the certificate made above; trusting
	// it would need the file in a pool, and these requests carry nothing
	// secret, so verification is skipped for them alone.
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// IssuedRoots returns Pebble's current root certificate (PEM), which the
// certificates it issues chain to.
func (p *Pebble) IssuedRoots(t testing.TB) []byte {
	t.Helper()
	resp, err := p.mgmtClient().Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", p.mgmt))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pebble roots: %d %v", resp.StatusCode, err)
	}
	return b
}

// Dig asks the DNS server on 127.0.0.1:port and returns the answer lines of
// dig +short.
func Dig(t testing.TB, port int, args ...string) []string {
	t.Helper()
	return testtools.Dig(t, port, append([]string{"+short"}, args...)...)
}
