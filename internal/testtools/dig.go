package testtools

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// DigOutput runs dig against the DNS server on 127.0.0.1:port with args and
// returns its whole output; a dig that fails fails t.
func DigOutput(t testing.TB, port int, args ...string) string {
	t.Helper()
	return DigOutputAt(t, "127.0.0.1", port, args...)
}

// DigOutputAt is DigOutput against the server on host:port (cluster tests
// run nodes on several loopback addresses).
func DigOutputAt(t testing.TB, host string, port int, args ...string) string {
	t.Helper()
	dig := Binary(t, "dig", "bind9-dnsutils")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{"@" + host, "-p", fmt.Sprint(port), "+time=2", "+tries=2"}, args...)
	out, err := exec.CommandContext(ctx, dig, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Dig is DigOutput without dig's comment and empty lines: the records, or
// with +short the values.
func Dig(t testing.TB, port int, args ...string) []string {
	t.Helper()
	return DigAt(t, "127.0.0.1", port, args...)
}

// DigAt is Dig against the server on host:port.
func DigAt(t testing.TB, host string, port int, args ...string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(DigOutputAt(t, host, port, args...), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, l)
		}
	}
	return lines
}

// DigStatus returns the status word of dig's header (NOERROR, NXDOMAIN, …).
func DigStatus(t testing.TB, port int, args ...string) string {
	t.Helper()
	out := DigOutput(t, port, args...)
	i := strings.Index(out, "status: ")
	if i < 0 {
		t.Fatalf("no status in dig output:\n%s", out)
	}
	return strings.TrimRight(strings.Fields(out[i+len("status: "):])[0], ",")
}
