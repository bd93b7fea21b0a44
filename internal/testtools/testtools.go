// Package testtools finds the external programs and services that tests use
// (dig, curl, PostgreSQL, ...). On a developer's machine a missing tool skips
// the test and names the Debian package to install; in CI, where
// GATEHOUSE_REQUIRE_TOOLS=1, a missing tool fails it.
package testtools

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Required reports whether missing tools must fail tests (CI).
func Required() bool { return os.Getenv("GATEHOUSE_REQUIRE_TOOLS") == "1" }

// Missing skips or fails t because what is missing; install says how to get it.
func Missing(t testing.TB, what, install string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s is required (GATEHOUSE_REQUIRE_TOOLS=1): %s", what, install)
	}
	t.Skipf("%s not available: %s", what, install)
}

// Binary returns the path of the named program, or skips/fails t naming the
// Debian package that provides it.
func Binary(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name, "apt-get install "+debianPackage)
	}
	return p
}

// PostgresDSN returns GATEHOUSE_TEST_POSTGRES, or skips/fails t.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("GATEHOUSE_TEST_POSTGRES")
	if dsn == "" {
		Missing(t, "PostgreSQL", "set GATEHOUSE_TEST_POSTGRES, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	return dsn
}

// Eventually polls cond until it holds, and fails t once timeout has
// passed, saying what it waited for. The first polls come quickly (5 ms)
// so that a test waits for the event rather than for a tick, and the pause
// doubles up to 100 ms so that a costly cond (a dig, an HTTP request) is
// not run in a tight loop.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// TCPPair is a connected TCP pair on loopback: the end that dialed and the
// end that was accepted, both closed when the test ends (closing one early,
// as a test may, is harmless).
func TCPPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The kernel completes the connection into the backlog: dial, then
	// accept, on one goroutine.
	dialed, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dialed.Close() })
	accepted, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close() })
	return dialed, accepted
}
