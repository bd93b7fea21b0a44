// Package cloudtest holds what the end-to-end tests and the benchmark
// programs share for running the cloud: the Caddy binary (GATEHOUSE_CADDY
// or built from ./cmd/caddy once per process), free loopback ports, the
// environment and paths of a Caddy run in a folder of its own, and polling.
//
// Each helper comes as a plain function returning an error, for the bench
// programs, and as a Must… form that fails a testing.TB, for tests.
package cloudtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// FreePort returns a port that was free a moment ago on 127.0.0.1 for both
// TCP and UDP.
func FreePort() (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port")
}

// MustFreePort is FreePort, failing t if there is none.
func MustFreePort(t testing.TB) int {
	t.Helper()
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreeTCPPort returns a port that was free a moment ago on 127.0.0.1 for
// TCP (UDP is not checked).
func FreeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitFor polls cond every interval until it holds, or returns an error
// ("timed out waiting for what") once timeout has passed.
func WaitFor(what string, timeout, interval time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		time.Sleep(interval)
	}
	return nil
}

type buildResult struct {
	path string
	err  error
}

var (
	buildMu  sync.Mutex
	built    = map[string]buildResult{}
	buildDir string
)

// moduleRoot is the repository's root (where go.mod is).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	return filepath.Dir(string(bytes.TrimSpace(out))), nil
}

// Build builds pkg (a package of the module, or a tool pinned in go.mod)
// with env added to the environment, once per process for each pkg and
// env, and returns the executable. RemoveBuilt deletes what it made.
func Build(pkg string, env ...string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	key := pkg + "\x00" + strings.Join(env, "\x00")
	if r, ok := built[key]; ok {
		return r.path, r.err
	}
	path, err := build(pkg, env)
	built[key] = buildResult{path, err}
	return path, err
}

func build(pkg string, env []string) (string, error) {
	if buildDir == "" {
		d, err := os.MkdirTemp("", "gatehouse-test-bin-")
		if err != nil {
			return "", err
		}
		buildDir = d
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	name := strings.NewReplacer("/", "_", ".", "_").Replace(pkg)
	if len(env) > 0 {
		name += fmt.Sprintf("-%d", len(built))
	}
	out := filepath.Join(buildDir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// MustBuild is Build, failing t if the build fails.
func MustBuild(t testing.TB, pkg string, env ...string) string {
	t.Helper()
	p, err := Build(pkg, env...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Main runs a test binary's tests, then removes the programs Build made.
// Packages that use Build (or CaddyBinary) call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	RemoveBuilt()
	os.Exit(code)
}

// RemoveBuilt deletes the programs Build made (from TestMain, after m.Run).
func RemoveBuilt() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
}

// CaddyBinary returns GATEHOUSE_CADDY (CI sets it to the xcaddy build) or
// ./cmd/caddy built once per process with buildEnv added.
func CaddyBinary(buildEnv ...string) (string, error) {
	if p := os.Getenv("GATEHOUSE_CADDY"); p != "" {
		return p, nil
	}
	return Build("./cmd/caddy", buildEnv...)
}

// MustCaddyBinary is CaddyBinary, failing t if the build fails.
func MustCaddyBinary(t testing.TB, buildEnv ...string) string {
	t.Helper()
	p, err := CaddyBinary(buildEnv...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// CaddyEnv is the environment (beyond the process's own) of a Caddy run
// kept inside dir: its data, its config and its HOME.
func CaddyEnv(dir string) []string {
	return []string{"XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "HOME=" + dir}
}

// LocalCARoot is the root certificate of the local CA of a Caddy run with
// CaddyEnv(dir).
func LocalCARoot(dir string) string {
	return filepath.Join(dir, "data", "caddy", "pki", "authorities", "local", "root.crt")
}
