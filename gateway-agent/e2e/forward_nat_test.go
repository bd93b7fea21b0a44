package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
	"github.com/gatehouse-project/gatehouse/internal/testenv"
	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// Each agent in its own network namespace behind its own NAT router, the
// cloud reachable only through the NAT at a "public" address, and no route
// between the two sites: ssh from gw2's site reaches the OpenSSH server on
// gw1's loopback through the forwarding, and only through it.
func TestForwardThroughNAT(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	nw := testenv.StartNATNetwork(t, 2) // first: cleaned up last
	ip, _ := testenv.NeedNetns(t)
	site1, site2 := nw.Sites[0], nw.Sites[1]
	c := testenv.StartCloud(t, testenv.CloudOptions{Forward: forwardCloudRules})
	sshd := testenv.StartSSHD(t, 22, site1.Wrap(ip)...)

	// Inside its namespace every agent has the same loopback ports: the
	// namespaces are separate hosts.
	const setup, api = "127.0.0.1:8090", "127.0.0.1:8091"
	startNAT := func(site testenv.NATSite, mac string, cfg map[string]any) *fwdAgent {
		stateDir := filepath.Join(t.TempDir(), "state")
		args := append(site.Wrap(ip), testenv.AgentBinary(t), "run",
			"-cloud", c.API(), "-cloud-ca", c.RootCA(), "-resolve", "api.box.test="+nw.Public,
			// Passthrough: the tunnel opens without waiting for a
			// certificate, so no ACME CA has to be reachable from the
			// sites (the one named here is not).
			"-passthrough", "-upstream", "127.0.0.1:9", "-acme-ca", "https://"+nw.Public+":1/dir",
			"-mac", mac, "-state-dir", stateDir, "-mdns=false", "-https-listen=", "-setup-listen", setup, "-api-listen", api,
			"-local-addrs", site.LAN, "-ping-interval", "2s", "-log-level", "debug", "-config", writeConfig(t, cfg))
		proc := testenv.Start(t, "gateway-agent "+site.Host, t.TempDir(), nil, args[0], args[1:]...)
		return &fwdAgent{agentRun: &agentRun{Process: proc, stateDir: stateDir}, api: api, wrap: site.Wrap(ip)}
	}
	a1 := startNAT(site1, gw1MAC, map[string]any{"forward_allow": []map[string]any{
		{"to": []string{"127.0.0.1/32"}, "ports": []int{22}, "from": []string{gw2}},
	}})
	a2 := startNAT(site2, gw2MAC, map[string]any{})

	// Both tunnels up, and the cloud saw each agent at its router's
	// public address: the NAT is in the way.
	for _, x := range []struct {
		a    *fwdAgent
		site testenv.NATSite
		name string
	}{{a1, site1, gw1}, {a2, site2, gw2}} {
		var st status.Status
		testtools.Eventually(t, 60*time.Second, x.name+"'s tunnel through the NAT", func() bool {
			if x.a.Exited() {
				t.Fatalf("agent exited:\n%s", x.a.Output())
			}
			out, err := nw.Exec(t, x.site, 10*time.Second, testenv.AgentBinary(t), "status", "-json", "-setup-listen", setup, "-state-dir", x.a.stateDir)
			if err != nil || json.Unmarshal([]byte(out), &st) != nil {
				return false
			}
			return st.Name == x.name && st.Tunnel.Connected && st.Ping.PublicIP != ""
		})
		if st.Ping.PublicIP != x.site.WAN {
			t.Fatalf("%s: the cloud saw %s, want the router's %s", x.name, st.Ping.PublicIP, x.site.WAN)
		}
		t.Logf("%s: LAN %s, seen by the cloud as %s", x.name, x.site.LAN, st.Ping.PublicIP)
	}

	// No route from gw2's site to gw1's.
	if out, err := sshd.SSH(t, site1.LAN, 22, "echo hello", site2.Wrap(ip)...); err == nil || !strings.Contains(out, "unreachable") {
		t.Fatalf("gw2's site reached gw1's LAN directly: %v\n%s", err, out)
	}

	// Through the forwarding (opened with the command inside gw2's
	// namespace), ssh works.
	a2.add(t, "2022", gw1, "127.0.0.1", 22)
	out, err := sshd.SSH(t, "127.0.0.1", 2022, "echo hello", site2.Wrap(ip)...)
	if err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("ssh through the NAT forwarding: %v\n%s\nsshd:\n%s", err, out, sshd.Output())
	}
	t.Log("ssh from gw2's site to gw1's loopback through two NATs and the cloud: hello")
	if !strings.Contains(a1.Output(), "forward opened") || !strings.Contains(a1.Output(), fmt.Sprintf("from=%s", gw2)) {
		t.Fatal("gw1 did not log the forwarding")
	}
}
