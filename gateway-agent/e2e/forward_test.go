package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/localapi"
	"github.com/gatehouse-project/gatehouse/internal/testenv"
	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// The two gateways of the forwarding tests: gw2 reaches services behind gw1.
// Their names are the provisional ones the cloud derives from their MACs.
const (
	gw1MAC, gw1 = "02:00:00:00:00:11", "gw-020000000011"
	gw2MAC, gw2 = "02:00:00:00:00:12", "gw-020000000012"
	// ghost is allowed by the cloud's rules but never registered.
	ghost = "gw-0200000000ff"
)

// forwardCloudRules lets gw2 reach gw1 (any port) and the unregistered
// ghost, and nothing else: gw1 may not reach gw2.
var forwardCloudRules = fmt.Sprintf("allow %s %s\nallow %s %s", gw2, gw1, gw2, ghost)

// fwdAgent is an agent with its local API.
type fwdAgent struct {
	*agentRun
	api  string
	wrap []string // runs the command in the agent's network namespace
}

// writeConfig writes the agent's JSON configuration file.
func writeConfig(t *testing.T, v map[string]any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// forwardCmd runs `gateway-agent forward ARGS` against the agent's API.
func (a *fwdAgent) forwardCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	full := append([]string{testenv.AgentBinary(t), "forward", args[0], "-state-dir", a.stateDir, "-api-listen", a.api}, args[1:]...)
	if len(a.wrap) > 0 {
		full = append(append([]string{}, a.wrap...), full...)
	}
	out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
	return string(out), err
}

// add opens a forwarding through the command and returns it.
func (a *fwdAgent) add(t *testing.T, local, gateway, ip string, remote int) forward.Info {
	t.Helper()
	out, err := a.forwardCmd(t, "add", "-json", local, gateway, ip, fmt.Sprint(remote))
	var info forward.Info
	if err != nil || json.Unmarshal([]byte(out), &info) != nil {
		t.Fatalf("forward add %s %s %s %d: %v\n%s", local, gateway, ip, remote, err, out)
	}
	return info
}

// list returns the forwardings through the command.
func (a *fwdAgent) list(t *testing.T) map[string]forward.Info {
	t.Helper()
	out, err := a.forwardCmd(t, "list", "-json")
	var l localapi.List
	if err != nil || json.Unmarshal([]byte(out), &l) != nil {
		t.Fatalf("forward list: %v\n%s", err, out)
	}
	m := map[string]forward.Info{}
	for _, f := range l.Forwards {
		m[f.Local] = f
	}
	return m
}

// expectRefused connects to the forwarding on local, expects the
// connection closed, and the refusal's reason in the list and the log.
func (a *fwdAgent) expectRefused(t *testing.T, local, reason string) {
	t.Helper()
	testenv.ExpectClosed(t, local)
	var got forward.Info
	testtools.Eventually(t, 10*time.Second, "the refusal in the forward list", func() bool {
		got = a.list(t)[local]
		return got.Refused > 0 && strings.Contains(got.LastError, reason)
	})
	if !strings.Contains(a.Output(), "forward refused: closing the local connection") || !strings.Contains(a.Output(), reason) {
		t.Fatalf("the refusal (%q) is not in the agent's log", reason)
	}
	t.Logf("refused as expected: %s", got.LastError)
}

func checkSSH(t *testing.T, s *testenv.SSHD, port int, wrap ...string) {
	t.Helper()
	out, err := s.SSH(t, "127.0.0.1", port, "echo hello", wrap...)
	if err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("ssh through the forwarding on port %d: %v\n%s\nsshd:\n%s", port, err, out, s.Output())
	}
}

// Two agents behind a real cloud: gw2 reaches a real OpenSSH server behind
// gw1 through a forwarding from its configuration file and one opened with
// the forward command; every refusal (cloud rule, gw1's allow-list, unknown
// gateway, offline gateway) closes the local connection with its reason
// logged; and the forwardings survive the cloud restarting under them.
func TestForwardSSH(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	sshd := testenv.StartSSHD(t, 0)
	c := testenv.StartCloud(t, testenv.CloudOptions{Forward: forwardCloudRules})
	p := testenv.StartPebble(t, fmt.Sprintf("127.0.0.1:%d", c.DNSPort), 24*time.Hour, false)

	// gw1 lets gw2 (only) reach its ssh server.
	cfg1 := writeConfig(t, map[string]any{"forward_allow": []map[string]any{
		{"to": []string{"127.0.0.1"}, "ports": []int{sshd.Port}, "from": []string{gw2}},
	}})
	api1 := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	a1 := &fwdAgent{agentRun: startAgent(t, c, p, filepath.Join(t.TempDir(), "gw1"), upstream(t), testenv.FreePort(t), testenv.FreePort(t),
		"-mac", gw1MAC, "-config", cfg1, "-api-listen", api1), api: api1}

	// gw2 forwards a local port to it from its configuration file.
	cfgPort := testenv.FreePort(t)
	cfgLocal := fmt.Sprintf("127.0.0.1:%d", cfgPort)
	cfg2 := writeConfig(t, map[string]any{"forwards": []map[string]any{
		{"local": fmt.Sprint(cfgPort), "gateway": gw1, "ip": "127.0.0.1", "remote": sshd.Port},
	}})
	api2 := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	a2 := &fwdAgent{agentRun: startAgent(t, c, p, filepath.Join(t.TempDir(), "gw2"), upstream(t), testenv.FreePort(t), testenv.FreePort(t),
		"-mac", gw2MAC, "-config", cfg2, "-api-listen", api2), api: api2}
	a1.waitReady(t, gw1, true)
	a2.waitReady(t, gw2, true)

	// The key file is private.
	if fi, err := os.Stat(filepath.Join(a2.stateDir, localapi.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api key file: %v %v", fi.Mode(), err)
	}
	if l := a2.list(t); l[cfgLocal].Origin != "config" || l[cfgLocal].Gateway != gw1 {
		t.Fatalf("the configuration's forwarding is not listed: %+v", l)
	}
	checkSSH(t, sshd, cfgPort)
	t.Log("ssh through the configuration's forwarding: hello")

	// One opened with the command, on a port the agent picks.
	dyn := a2.add(t, "127.0.0.1:0", gw1, "127.0.0.1", sshd.Port)
	_, port, _ := strings.Cut(dyn.Local, "127.0.0.1:")
	var dynPort int
	fmt.Sscan(port, &dynPort)
	checkSSH(t, sshd, dynPort)
	if got := a2.list(t)[dyn.Local]; got.Opened != 1 || got.Origin != "api" {
		t.Fatalf("after one ssh: %+v", got)
	}
	if !strings.Contains(a1.Output(), "forward opened") || !strings.Contains(a1.Output(), "from="+gw2) {
		t.Fatal("gw1 does not log the forwarding it served with its source")
	}

	// The refusals, each with its reason.
	t.Run("cloud rule", func(t *testing.T) {
		// gw1 may not reach gw2: the cloud's rules only go the other way.
		f := a1.add(t, "127.0.0.1:0", gw2, "127.0.0.1", sshd.Port)
		a1.expectRefused(t, f.Local, "denied by the cloud's forwarding rules")
	})
	t.Run("allow-list", func(t *testing.T) {
		// Allowed by the cloud, but gw1 only lets port sshd.Port through.
		f := a2.add(t, "127.0.0.1:0", gw1, "127.0.0.1", c.HTTPSPort)
		a2.expectRefused(t, f.Local, "refused by "+gw1+": "+forward.ReasonNotAllowed)
	})
	t.Run("unknown gateway", func(t *testing.T) {
		f := a2.add(t, "127.0.0.1:0", ghost, "127.0.0.1", 22)
		a2.expectRefused(t, f.Local, "unknown gateway")
	})

	// The cloud restarts: the listeners stay, the tunnels come back, and
	// the same forwardings work again.
	c.Restart(t)
	testtools.Eventually(t, 60*time.Second, "both tunnels back after the cloud restarted", func() bool {
		s1, s2 := a1.status(t), a2.status(t)
		return s1.Tunnel.Connected && s2.Tunnel.Connected && time.Since(s1.Tunnel.Since) < time.Minute && time.Since(s2.Tunnel.Since) < time.Minute
	})
	checkSSH(t, sshd, cfgPort)
	checkSSH(t, sshd, dynPort)
	t.Log("ssh through both forwardings after the cloud restarted: hello")

	// rm closes a forwarding.
	if out, err := a2.forwardCmd(t, "rm", dyn.Local); err != nil || !strings.Contains(out, "closed") {
		t.Fatalf("forward rm: %v %s", err, out)
	}
	if _, ok := a2.list(t)[dyn.Local]; ok {
		t.Fatal("still listed after rm")
	}

	t.Run("target offline", func(t *testing.T) {
		a1.Stop()
		a2.expectRefused(t, cfgLocal, "target gateway offline")
	})
}
