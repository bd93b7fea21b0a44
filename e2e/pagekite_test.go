package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// kiteSealKey is the cloud's token_seal_key in these tests.
const kiteSealKey = "GATEHOUSE_SEAL_KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// kiteExpireAfter is short, so that a kite must keep its name alive.
const kiteExpireAfter = 5 * time.Second

// startKiteCloud is the tunnel cloud with a token_seal_key (PageKite on)
// and a short expire_after.
func startKiteCloud(t *testing.T) *cloud {
	t.Helper()
	caddyfile := strings.Replace(tunnelCaddyfile, "expire_after 7d",
		fmt.Sprintf("expire_after %s\n\t\ttoken_seal_key {env.GATEHOUSE_SEAL_KEY}", kiteExpireAfter), 1)
	caddyfile = strings.NewReplacer("%STORAGE%", "sqlite %DIR%/registry.db", "%APPEXTRA%", "").Replace(caddyfile)
	c := startCloud(t, caddyfile, kiteSealKey)
	testtools.Eventually(t, 30*time.Second, "the wildcard certificate", func() bool {
		code, _, err := c.tryCurl("nosuchgateway.box.test", "/")
		return err == nil && code == 404
	})
	return c
}

// kiteProc is Debian's pagekite running as a gateway's kite.
type kiteProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (k *kiteProc) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.out.Write(p)
}

func (k *kiteProc) log() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.out.String()
}

// startKite runs pagekite as the WebThings gateway does, with the cloud's
// HTTPS port as its frontend (an address, so the kite needs no DNS).
func startKite(t *testing.T, c *cloud, name string, backendPort int, secret string) *kiteProc {
	t.Helper()
	bin := testtools.Binary(t, "pagekite", "pagekite")
	k := &kiteProc{done: make(chan struct{})}
	k.cmd = exec.Command(bin, "--clean", "--logfile=stdio",
		fmt.Sprintf("--frontend=127.0.0.1:%d", c.https),
		fmt.Sprintf("--service_on=https:%s.box.test:localhost:%d:%s", name, backendPort, secret))
	k.cmd.Stdout, k.cmd.Stderr = k, k
	k.cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = k.cmd.Wait(); close(k.done) }()
	t.Cleanup(func() {
		k.kill()
		if t.Failed() {
			t.Logf("kite log:\n%s", k.log())
		}
	})
	return k
}

func (k *kiteProc) kill() {
	_ = k.cmd.Process.Kill()
	<-k.done
}

func (k *kiteProc) waitLog(t *testing.T, s string, within time.Duration) {
	t.Helper()
	testtools.Eventually(t, within, fmt.Sprintf("%q in the kite's log", s), func() bool { return strings.Contains(k.log(), s) })
}

// bigBody is what gatewayServer sends for /big?n=N.
func bigBody(n int) string {
	return strings.Repeat("0123456789abcdef", n/16+1)[:n]
}

// A stock PageKite kite on the cloud's HTTPS port: curl reaches the
// gateway's own server with its own certificate, byte-exact; a wrong
// secret is Invalid, a second kite Duplicate; the kite keeps its name
// alive without /ping; a dead kite leaves the offline page.
func TestPageKite(t *testing.T) {
	c := startKiteCloud(t)
	cert := newGatewayCert(t, "kite")
	srv := gatewayServer(t, cert, "hello from the kite")
	backendPort := srv.Listener.Addr().(*net.TCPAddr).Port
	token := subscribe(t, c, "kite")
	start := time.Now()

	t.Run("wrong secret is Invalid", func(t *testing.T) {
		bad := startKite(t, c, "kite", backendPort, "not-the-token")
		bad.waitLog(t, "reason=signature", 30*time.Second)
		bad.kill()
	})

	kite := startKite(t, c, "kite", backendPort, token)
	kite.waitLog(t, "connect=", 30*time.Second)
	var r curlResult
	testtools.Eventually(t, 20*time.Second, "the kite's answer", func() bool {
		var err error
		r, err = tryCurlTLS(t, c, "kite.box.test", "/", cert.file)
		return err == nil && r.code == 200
	})
	if r.body != "hello from the kite (path /)\n" || !strings.Contains(r.certLine("subject"), cert.org) {
		t.Fatalf("answer %q from %q", r.body, r.certLine("subject"))
	}
	const n = 3 << 20
	if r := curlTLS(t, c, "kite.box.test", fmt.Sprintf("/big?n=%d", n), cert.file); r.code != 200 || r.body != bigBody(n) {
		t.Fatalf("download: %d, %d bytes, equal %v", r.code, len(r.body), r.body == bigBody(n))
	}
	if v := metricValue(adminMetrics(t, c), `gatehouse_tunnels{kind="pagekite"}`); v != 1 {
		t.Fatalf("gatehouse_tunnels{kind=pagekite} = %v", v)
	}

	t.Run("second kite is Duplicate", func(t *testing.T) {
		dup := startKite(t, c, "kite", backendPort, token)
		dup.waitLog(t, "err=Duplicate", 30*time.Second)
		dup.kill()
		if r := curlTLS(t, c, "kite.box.test", "/after-duplicate", cert.file); r.code != 200 || !strings.Contains(r.body, "/after-duplicate") {
			t.Fatalf("after the duplicate: %d %q", r.code, r.body)
		}
	})

	t.Run("the kite keeps its name alive without ping", func(t *testing.T) {
		// Never pinged: only the live kite keeps the gateway from expiring.
		if d := 2*kiteExpireAfter + time.Second - time.Since(start); d > 0 {
			time.Sleep(d)
		}
		if r := curlTLS(t, c, "kite.box.test", "/still", cert.file); r.code != 200 || !strings.Contains(r.body, "/still") {
			t.Fatalf("after %v without ping: %d %q", time.Since(start), r.code, r.body)
		}
		if code, info := c.api("/info?token=" + token); code != 200 {
			t.Fatalf("info: %d %v", code, info)
		}
	})

	t.Run("a dead kite leaves the offline page", func(t *testing.T) {
		kite.kill()
		var r curlResult
		testtools.Eventually(t, 15*time.Second, "the offline page", func() bool {
			var err error
			r, err = tryCurlTLS(t, c, "kite.box.test", "/", c.rootCA())
			return err == nil && r.code == 503
		})
		if !strings.Contains(r.body, "This gateway is offline") {
			t.Fatalf("offline page: %q", r.body)
		}
	})
}
