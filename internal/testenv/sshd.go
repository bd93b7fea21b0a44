package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// SSHD is a real OpenSSH server run for a test, with a generated host key
// and one authorized client key.
type SSHD struct {
	*Process
	// Port is where it listens (on 127.0.0.1 of its network namespace).
	Port int
	// ClientKey is the private key it accepts, User the login.
	ClientKey string
	User      string
}

// StartSSHD runs /usr/sbin/sshd on 127.0.0.1:port (0 picks a free port)
// with a configuration of its own (no PAM, keys only, root allowed: CI runs
// as root). wrap prefixes the command, e.g. "ip netns exec NS" to run it in
// a network namespace. The server stops when the test ends.
func StartSSHD(t testing.TB, port int, wrap ...string) *SSHD {
	t.Helper()
	sshd := testtools.Binary(t, "sshd", "openssh-server")
	keygen := testtools.Binary(t, "ssh-keygen", "openssh-client")
	if !filepath.IsAbs(sshd) {
		t.Fatalf("sshd must run from an absolute path, got %s", sshd)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		ensurePrivsepDir(t)
	}
	dir := t.TempDir()
	// sshd refuses keys in directories others can write; TempDir is 0700
	// already, and StrictModes is off for the rest of the path.
	for _, k := range []string{"host_key", "client_key"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "gatehouse-test", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if port == 0 {
		port = FreePort(t)
	}
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile none
StrictModes no
UsePAM no
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowUsers %s
LogLevel VERBOSE
`, port, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), u.Username)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, args := sshd, []string{"-D", "-e", "-f", filepath.Join(dir, "sshd_config")}
	if len(wrap) > 0 {
		bin, args = wrap[0], append(append(append([]string{}, wrap[1:]...), sshd), args...)
	}
	s := &SSHD{Port: port, ClientKey: filepath.Join(dir, "client_key"), User: u.Username}
	s.Process = Start(t, "sshd", dir, nil, bin, args...)
	testtools.Eventually(t, 15*time.Second, "sshd to listen", func() bool {
		if s.Exited() {
			t.Fatalf("sshd exited:\n%s", s.Output())
		}
		return strings.Contains(s.Output(), "Server listening")
	})
	return s
}

// ensurePrivsepDir creates /run/sshd, which sshd running as root needs (the
// Debian service creates it at start; a test has no service). It is left in
// place: test binaries of several packages run at once, and removing it
// when one test ends broke another's sshd starting at that moment. The
// empty folder is what the service itself would leave.
func ensurePrivsepDir(t testing.TB) {
	const dir = "/run/sshd"
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatalf("sshd's privilege separation directory: %v", err)
	}
}

// SSH runs `ssh -p port user@host command` with the server's client key
// (wrap as for StartSSHD) and returns the combined output.
func (s *SSHD) SSH(t testing.TB, host string, port int, command string, wrap ...string) (string, error) {
	t.Helper()
	ssh := testtools.Binary(t, "ssh", "openssh-client")
	args := []string{"-F", "/dev/null", "-p", fmt.Sprint(port), "-i", s.ClientKey,
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		s.User + "@" + host, command}
	bin := ssh
	if len(wrap) > 0 {
		bin, args = wrap[0], append(append(append([]string{}, wrap[1:]...), ssh), args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

// ExpectClosed connects to addr and expects the connection to be closed
// without a byte (a refused forwarding).
func ExpectClosed(t testing.TB, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 1)
	n, err := c.Read(b)
	var ne net.Error
	if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("%s: want the connection closed without data, got %d bytes, %v", addr, n, err)
	}
}
