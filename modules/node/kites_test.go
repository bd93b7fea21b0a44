package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/pagekite"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

func sealer(t *testing.T) *registry.Sealer {
	t.Helper()
	s, err := registry.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startNode(t *testing.T, store registry.Store, cfg Config) *Node {
	t.Helper()
	cfg.Zone = zone
	n, err := New(store, cfg, (&Shared{}).Acquire(zone, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		_ = n.Stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop() })
	return n
}

// The node runs a PageKite frontend only with a seal key, and a kite's
// secret is its gateway's token, for the gateway's own name only and
// never for a disabled gateway.
func TestKiteSecret(t *testing.T) {
	store := teststore.Open(t, "sqlite")
	if n := startNode(t, teststore.Open(t, "sqlite"), Config{}); n.Kites() != nil {
		t.Fatal("PageKite is on without a seal key")
	}
	n := startNode(t, store, Config{Registry: registry.Config{Sealer: sealer(t)}})
	if n.Kites() == nil {
		t.Fatal("PageKite is off with a seal key")
	}
	home := subscribe(t, n.Registry(), "home")
	off := subscribe(t, n.Registry(), "off")
	if _, err := n.Registry().SetDisabled(t.Context(), "off", true); err != nil {
		t.Fatal(err)
	}
	_ = off

	secret, err := n.kiteSecret(t.Context(), "home."+zone, "https")
	if err != nil || secret != home.Token {
		t.Fatalf("secret of home: %q, %v", secret, err)
	}
	if secret, err := n.kiteSecret(t.Context(), "HOME."+zone+".", "https"); err != nil || secret != home.Token {
		t.Fatalf("case and trailing dot: %q, %v", secret, err)
	}
	for _, domain := range []string{"www.home." + zone, "home.example.org", zone, "api." + zone, "nobody." + zone, "off." + zone} {
		if _, err := n.kiteSecret(t.Context(), domain, "https"); !errors.Is(err, pagekite.ErrUnknownKite) {
			t.Errorf("%s: %v, want ErrUnknownKite", domain, err)
		}
	}
}

// A gateway whose tunnel stays up does not expire though it never pings,
// and the tunnel's address is recorded; once the tunnel is gone it
// expires as before.
func TestLiveTunnelKeepsGatewayAlive(t *testing.T) {
	store := teststore.Open(t, "sqlite")
	const expire = 2 * time.Second
	n := startNode(t, store, Config{TunnelPingInterval: 200 * time.Millisecond, DNS: dnsConfig(), Registry: registry.Config{ExpireAfter: expire, SweepInterval: 100 * time.Millisecond}})
	live := subscribe(t, n.Registry(), "live")
	subscribe(t, n.Registry(), "silent")

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Hub().ServeTunnel(w, r, n.AuthenticateTunnel, tunnel.Config{})
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	agentDone := make(chan struct{})
	agent := &client.Client{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Name: "live", Token: live.Token,
		Handler: func(st *tunnel.Stream) { _ = st.Ack(false, "no") }}
	go func() { defer close(agentDone); _ = agent.Run(ctx) }()
	stopAgent := sync.OnceFunc(func() { cancel(); <-agentDone })
	defer stopAgent()
	testtools.Eventually(t, 15*time.Second, "the tunnel", func() bool { _, ok := n.Hub().Lookup("live"); return ok })

	expired := func(name string) bool {
		g, err := n.Registry().Gateway(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		return g.Expired
	}
	testtools.Eventually(t, 15*time.Second, "the silent gateway to expire", func() bool { return expired("silent") })
	// Two more expiry periods with the tunnel up.
	time.Sleep(2 * expire)
	if expired("live") {
		t.Fatal("a gateway with a live tunnel expired")
	}
	g, err := n.Registry().Gateway(t.Context(), "live")
	if err != nil {
		t.Fatal(err)
	}
	if !g.PublicV4.IsLoopback() || time.Since(g.LastPing) > expire {
		t.Fatalf("the tunnel's ping was not recorded: public %v, last ping %v", g.PublicV4, g.LastPing)
	}

	stopAgent()
	testtools.Eventually(t, 15*time.Second, "the gateway to expire without its tunnel", func() bool { return expired("live") })
}

// A WebThings gateway pings only once its kite is up, so an expired
// gateway's kite is let in (its signature proves the token) and brings
// the gateway back, as a ping would: Debian's pagekite against the node's
// frontend.
func TestExpiredGatewayComesBackWithItsKite(t *testing.T) {
	bin := testtools.Binary(t, "pagekite", "pagekite")
	store := teststore.Open(t, "sqlite")
	n := startNode(t, store, Config{TunnelPingInterval: 200 * time.Millisecond, DNS: dnsConfig(),
		Registry: registry.Config{Sealer: sealer(t), ExpireAfter: time.Second, SweepInterval: 100 * time.Millisecond}})
	late := subscribe(t, n.Registry(), "late")
	expired := func() bool {
		g, err := n.Registry().Gateway(t.Context(), "late")
		if err != nil {
			t.Fatal(err)
		}
		return g.Expired
	}
	testtools.Eventually(t, 15*time.Second, "the gateway to expire", expired)

	port := serveKites(t, n)
	startKite(t, bin, port, "late", late.Token)
	testtools.Eventually(t, 30*time.Second, "the expired gateway's kite to be its tunnel", func() bool {
		_, ok := n.Hub().Lookup("late")
		return ok
	})
	if expired() {
		t.Fatal("the kite is up but the gateway is still expired")
	}
	g, err := n.Registry().Gateway(t.Context(), "late")
	if err != nil || !g.PublicV4.IsLoopback() {
		t.Fatalf("the kite's address was not recorded: %+v, %v", g, err)
	}
	// And it stays back while the kite is up.
	time.Sleep(2 * time.Second)
	if expired() {
		t.Fatal("the gateway expired again with its kite up")
	}
}

// serveKites runs n's PageKite frontend on a loopback port until the test
// ends, and returns the port.
func serveKites(t *testing.T, n *Node) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); _ = n.Kites().ServeConn(ctx, c) })
		}
	})
	t.Cleanup(func() { cancel(); _ = ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

// startKite runs Debian's pagekite (bin) as the kite of name with token
// against the frontend on port until the test ends; its log is shown when
// the test failed.
func startKite(t *testing.T, bin string, port int, name, token string) {
	t.Helper()
	var out bytes.Buffer
	var outMu sync.Mutex
	kite := exec.Command(bin, "--clean", "--logfile=stdio",
		fmt.Sprintf("--frontend=127.0.0.1:%d", port),
		// The backend is never dialled here.
		fmt.Sprintf("--service_on=https:%s.%s:localhost:9:%s", name, zone, token))
	kite.Stdout = lockedWriter{&outMu, &out}
	kite.Stderr = kite.Stdout
	kite.Env = append(os.Environ(), "HOME="+t.TempDir())
	if err := kite.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kite.Process.Kill()
		_ = kite.Wait()
		if t.Failed() {
			outMu.Lock()
			t.Logf("kite %s log:\n%s", name, out.String())
			outMu.Unlock()
		}
	})
}

// A kite signing with an acme-dns account's token is refused from outside
// the account's allowfrom networks, as the API and the agents' tunnel
// refuse the token there; from inside, it connects. Debian's pagekite
// against the node's frontend, both from 127.0.0.1.
func TestKiteHonoursAllowFrom(t *testing.T) {
	bin := testtools.Binary(t, "pagekite", "pagekite")
	n := startNode(t, teststore.Open(t, "sqlite"), Config{DNS: dnsConfig(), Registry: registry.Config{Sealer: sealer(t)}})
	ctx := t.Context()
	far, err := n.Registry().RegisterACMEDNS(ctx, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	near, err := n.Registry().RegisterACMEDNS(ctx, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	if err != nil {
		t.Fatal(err)
	}
	port := serveKites(t, n)
	startKite(t, bin, port, far.Name, far.Token)
	startKite(t, bin, port, near.Name, near.Token)
	testtools.Eventually(t, 30*time.Second, "the kite from inside allowfrom", func() bool {
		_, ok := n.Hub().Lookup(near.Name)
		return ok
	})
	// Both kites started together and took the same path; give the
	// refused one a little longer anyway.
	time.Sleep(time.Second)
	if _, ok := n.Hub().Lookup(far.Name); ok {
		t.Fatal("a kite from outside its account's allowfrom became the tunnel")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
