// Package e2e runs the cloud as a user does: the Caddy binary with the
// Gatehouse modules, started from a Caddyfile, spoken to with curl and dig.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// caddyBinary returns GATEHOUSE_CADDY (CI sets it to the xcaddy build) or a
// binary built from ./cmd/caddy once per test run.
func caddyBinary(t *testing.T) string {
	t.Helper()
	return cloudtest.MustCaddyBinary(t)
}

// freePort returns a port that was free a moment ago on 127.0.0.1 for both
// TCP and UDP.
func freePort(t *testing.T) int {
	t.Helper()
	return cloudtest.MustFreePort(t)
}

// cloud is one running Caddy process.
type cloud struct {
	t       *testing.T
	dir     string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	logMu   *sync.Mutex
	admin   int
	https   int
	dns     int
	env     []string
	stopped chan struct{}
	// ip is the loopback address Caddy listens on ("": 127.0.0.1):
	// cluster tests run several nodes on the same ports.
	ip string
}

// host is the address the cloud listens on.
func (c *cloud) host() string {
	if c.ip == "" {
		return "127.0.0.1"
	}
	return c.ip
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startCloud writes caddyfile (with %ADMIN%, %HTTPS%, %HTTP%, %DNS% and
// %DIR% replaced) into a fresh folder and runs Caddy on it until the test ends.
func startCloud(t *testing.T, caddyfile string, env ...string) *cloud {
	t.Helper()
	c := &cloud{t: t, dir: t.TempDir(), log: new(bytes.Buffer), logMu: new(sync.Mutex),
		admin: freePort(t), https: freePort(t), dns: freePort(t), env: env}
	http := freePort(t)
	r := strings.NewReplacer("%ADMIN%", fmt.Sprint(c.admin), "%HTTPS%", fmt.Sprint(c.https),
		"%HTTP%", fmt.Sprint(http), "%DNS%", fmt.Sprint(c.dns), "%DIR%", c.dir)
	if err := os.WriteFile(filepath.Join(c.dir, "Caddyfile"), []byte(r.Replace(caddyfile)), 0o600); err != nil {
		t.Fatal(err)
	}
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *cloud) start() {
	c.t.Helper()
	c.cmd = exec.Command(caddyBinary(c.t), "run", "--config", "Caddyfile", "--adapter", "caddyfile")
	c.cmd.Dir = c.dir
	c.cmd.Env = append(os.Environ(), cloudtest.CaddyEnv(c.dir)...)
	c.cmd.Env = append(c.cmd.Env, c.env...)
	w := lockedWriter{c.logMu, c.log}
	c.cmd.Stdout, c.cmd.Stderr = w, w
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.stopped = make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(c.stopped) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.stopped:
			c.t.Fatalf("caddy exited at start:\n%s", c.logs())
		default:
		}
		// Ready once the API answers over TLS: the local CA has issued
		// the API's certificate.
		if code, _, err := c.tryCurl("api.box.test", "/connectivity-check"); err == nil && code == 200 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("caddy did not start listening:\n%s", c.logs())
}

func (c *cloud) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.stopped:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.stopped
	}
	c.cmd = nil
	if c.t.Failed() {
		c.t.Logf("caddy log:\n%s", c.logs())
	}
}

func (c *cloud) restart() {
	c.t.Helper()
	c.stop()
	c.start()
}

func (c *cloud) logs() string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return c.log.String()
}

// rootCA is the local CA that signed the cloud's own certificates.
func (c *cloud) rootCA() string {
	return cloudtest.LocalCARoot(c.dir)
}

// curl runs curl against https://HOST:PORT/PATH resolved to loopback and
// returns the status code and body.
func (c *cloud) curl(host, path string, extra ...string) (int, []byte) {
	c.t.Helper()
	code, body, err := c.tryCurl(host, path, extra...)
	if err != nil {
		c.t.Fatalf("curl %s%s: %v\n%s", host, path, err, body)
	}
	return code, body
}

func (c *cloud) tryCurl(host, path string, extra ...string) (int, []byte, error) {
	c.t.Helper()
	curl := testtools.Binary(c.t, "curl", "curl")
	args := append([]string{"-sS", "--max-time", "20", "--cacert", c.rootCA(),
		"--resolve", fmt.Sprintf("%s:%d:%s", host, c.https, c.host()),
		"-o", "-", "-w", "\n%{http_code}"}, extra...)
	args = append(args, fmt.Sprintf("https://%s:%d%s", host, c.https, path))
	out, err := exec.Command(curl, args...).Output()
	if err != nil {
		return 0, out, err
	}
	i := bytes.LastIndexByte(out, '\n')
	var code int
	fmt.Sscan(string(out[i+1:]), &code)
	return code, out[:i], nil
}

// api calls the registration API and decodes its JSON answer.
func (c *cloud) api(path string, extra ...string) (int, map[string]any) {
	c.t.Helper()
	code, body := c.curl("api.box.test", path, extra...)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	if m == nil {
		m = map[string]any{"_raw": string(body)}
	}
	return code, m
}

// dig asks the cloud's DNS server and returns dig's answer lines (+short).
func (c *cloud) dig(args ...string) []string {
	c.t.Helper()
	return testtools.Dig(c.t, c.dns, args...)
}
