package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// NATSite is a home network the test builds: a router namespace whose WAN
// side is a veth pair to the root namespace and which masquerades (nftables)
// what its LAN sends out, and a host namespace on that LAN where an agent
// runs. The host's only route is toward the cloud's public address: nothing
// it sends can go anywhere else, and no site can reach another.
type NATSite struct {
	// Router and Host are the namespaces' names.
	Router, Host string
	// WAN is the router's public address (what the cloud sees), LAN the
	// host's address on its private network.
	WAN, LAN string
}

// Wrap runs a command in the host namespace: prefix it with these.
func (s NATSite) Wrap(ip string) []string { return []string{ip, "netns", "exec", s.Host} }

// NATNetwork is the test's topology: the cloud's public address in the root
// namespace, and the sites behind it.
type NATNetwork struct {
	// Public is the address, in the root namespace, the cloud is reached
	// at from the sites.
	Public string
	Sites  []NATSite
	ip     string
}

// NeedNetns returns the ip and nft programs, or skips the test (fails it
// in CI, through testtools.Missing) when it cannot make network namespaces:
// not root, or the kernel refuses.
func NeedNetns(t testing.TB) (ip, nft string) {
	t.Helper()
	ip = testtools.Binary(t, "ip", "iproute2")
	nft = testtools.Binary(t, "nft", "nftables")
	if os.Geteuid() != 0 {
		testtools.Missing(t, "root (network namespaces)", "run the test as root (CI does)")
	}
	probe := "ghprobe-" + randHex(t, 3)
	out, err := exec.Command(ip, "netns", "add", probe).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Operation not permitted") || strings.Contains(string(out), "Permission denied") {
			testtools.Missing(t, "network namespaces (ip netns: EPERM)", "run as root with CAP_SYS_ADMIN (CI does)")
		}
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	_ = exec.Command(ip, "netns", "del", probe).Run()
	return ip, nft
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// StartNATNetwork builds n sites behind NAT and removes everything (nft
// tables, namespaces, the root side's veths) when the test ends, failed or
// not. Register it before the processes that run in the namespaces, so that
// their cleanup (stopping them) runs first.
func StartNATNetwork(t testing.TB, n int) *NATNetwork {
	t.Helper()
	ip, nft := NeedNetns(t)
	id := randHex(t, 2)
	// One /24 of 10.201.0.0/16 for the WAN links, chosen so that the root
	// namespace has no address in it already (another run, or the host).
	sub := -1
	addrs, _ := exec.Command(ip, "-4", "-o", "addr").Output()
	for range 50 {
		b := make([]byte, 1)
		_, _ = rand.Read(b)
		k := 1 + int(b[0])%250
		if !strings.Contains(string(addrs), fmt.Sprintf(" 10.201.%d.", k)) {
			sub = k
			break
		}
	}
	if sub < 0 {
		t.Fatal("no free 10.201.x.0/24 for the test's WAN links")
	}
	nw := &NATNetwork{Public: fmt.Sprintf("10.201.%d.1", sub), ip: ip}
	var namespaces, rootLinks []string
	var routers []string
	t.Cleanup(func() {
		for _, r := range routers {
			_ = exec.Command(ip, "netns", "exec", r, nft, "delete", "table", "ip", "gatehouse_nat").Run()
		}
		for _, l := range rootLinks {
			_ = exec.Command(ip, "link", "del", l).Run()
		}
		for _, ns := range namespaces {
			if out, err := exec.Command(ip, "netns", "del", ns).CombinedOutput(); err != nil {
				t.Logf("ip netns del %s: %v %s", ns, err, out)
			}
		}
	})
	run := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for i := range n {
		s := NATSite{
			Router: fmt.Sprintf("gh%s-r%d", id, i+1),
			Host:   fmt.Sprintf("gh%s-h%d", id, i+1),
			WAN:    fmt.Sprintf("10.201.%d.%d", sub, 4*i+2),
			LAN:    fmt.Sprintf("10.201.%d.2", 101+i),
		}
		rootSide := fmt.Sprintf("10.201.%d.%d", sub, 4*i+1)
		routerLAN := fmt.Sprintf("10.201.%d.1", 101+i)
		rootLink := fmt.Sprintf("gh%s-w%d", id, i+1)
		for _, ns := range []string{s.Router, s.Host} {
			run(ip, "netns", "add", ns)
			namespaces = append(namespaces, ns)
			run(ip, "-n", ns, "link", "set", "lo", "up")
		}
		routers = append(routers, s.Router)
		// WAN: root ⇄ router.
		run(ip, "link", "add", rootLink, "type", "veth", "peer", "name", "wan", "netns", s.Router)
		rootLinks = append(rootLinks, rootLink)
		run(ip, "addr", "add", rootSide+"/30", "dev", rootLink)
		run(ip, "link", "set", rootLink, "up")
		run(ip, "-n", s.Router, "addr", "add", s.WAN+"/30", "dev", "wan")
		run(ip, "-n", s.Router, "link", "set", "wan", "up")
		if rootSide != nw.Public {
			run(ip, "-n", s.Router, "route", "add", nw.Public+"/32", "via", rootSide)
		}
		// LAN: router ⇄ host.
		run(ip, "-n", s.Router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", s.Host)
		run(ip, "-n", s.Router, "addr", "add", routerLAN+"/24", "dev", "lan")
		run(ip, "-n", s.Router, "link", "set", "lan", "up")
		run(ip, "-n", s.Host, "addr", "add", s.LAN+"/24", "dev", "eth0")
		run(ip, "-n", s.Host, "link", "set", "eth0", "up")
		// Only the cloud: no default route, so nothing leaves for the
		// host's real networks.
		run(ip, "-n", s.Host, "route", "add", nw.Public+"/32", "via", routerLAN)
		run(ip, "netns", "exec", s.Router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		// A home router: masquerade what goes out, let only answers in.
		rules := `table ip gatehouse_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan" oifname "wan" accept
	}
}
`
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, ip, "netns", "exec", s.Router, nft, "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("nft in %s: %v\n%s", s.Router, err, out)
		}
		nw.Sites = append(nw.Sites, s)
	}
	return nw
}

// Exec runs a command in site's host namespace and returns its output.
func (n *NATNetwork) Exec(t testing.TB, s NATSite, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, n.ip, append([]string{"netns", "exec", s.Host}, args...)...).CombinedOutput()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return string(out), err
}
