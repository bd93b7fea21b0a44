package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/adminapi"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// clusterCaddyfile is one node of a cluster on one PostgreSQL schema: the
// tunnel frontend of tunnelCaddyfile, bound to the node's own loopback
// address (every node uses the same ports), with a cluster section whose
// link certificates come from files (%LINKCERT% = fileCerts) or from the
// pki app (pkiCerts).
const clusterCaddyfile = `{
	admin %IP%:%ADMIN% {
		origins %IP%:%ADMIN%
	}
	default_bind %IP%
	http_port %HTTP%
	https_port %HTTPS%
	local_certs
	skip_install_trust
	%PKI%
	servers {
		protocols h1 h2
		listener_wrappers {
			gatehouse {
				peek_timeout 5s
				open_timeout 5s
			}
			tls
		}
	}
	gatehouse {
		zone box.test
		storage postgres {env.GATEHOUSE_PG}
		expire_after 7d
		rate_limit subscribe 1ns 1000000
		dns {
			listen udp/%IP%:%DNS% tcp/%IP%:%DNS%
			nameserver ns1.box.test 192.0.2.53
			tunnel_address 192.0.2.10
		}
		cluster {
			name %NODE%
			public_addresses %IP%
			listen tcp/%IP%:%LINK%
			lease 3s
			%LINKCERT%
		}
	}
}
api.box.test {
	gatehouse
}
*.box.test {
	gatehouse offline
}
`

// How the nodes get their link certificates.
const (
	fileCerts = "certificate %CERTS%/%NODE%.crt %CERTS%/%NODE%.key\n\t\t\tca %CERTS%/ca.crt"
	// Issued by each node from the pki app's "cluster" CA, which the
	// nodes share through a shared Caddy data folder.
	pkiCerts = "pki cluster"
	pkiApp   = "pki {\n\t\tca cluster {\n\t\t\tname \"Gatehouse test cluster\"\n\t\t}\n\t}"
)

// clusterOptions vary the nodes startClusterNodes runs.
type clusterOptions struct {
	// pki: link certificates from the pki app's CA in a shared data
	// folder, instead of files of one test CA.
	pki bool
	// extra lines in each node's gatehouse block (a forward section).
	extra string
}

// startClusterNodes runs n Caddy nodes on 127.0.0.1 … 127.0.0.n, same
// ports, one PostgreSQL schema.
func startClusterNodes(t *testing.T, n int, opt clusterOptions) []*cloud {
	t.Helper()
	dsn := postgresSchemaDSN(t)
	certs := t.TempDir()
	ca := testcert.MustCA(t, testcert.Options{DNSNames: []string{"gatehouse test cluster"}})
	ca.MustWrite(t, filepath.Join(certs, "ca.crt"), "")
	admin, https, http, link, dns := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	linkCert, pkiGlobal := fileCerts, ""
	sharedData := filepath.Join(t.TempDir(), "data")
	if opt.pki {
		linkCert, pkiGlobal = pkiCerts, pkiApp
		if err := os.Mkdir(sharedData, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	nodes := make([]*cloud, n)
	var wg sync.WaitGroup
	for i := range nodes {
		name, ip := fmt.Sprintf("node-%d", i+1), fmt.Sprintf("127.0.0.%d", i+1)
		ca.MustIssue(t, testcert.Options{DNSNames: []string{name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}).
			MustWrite(t, filepath.Join(certs, name+".crt"), filepath.Join(certs, name+".key"))
		c := &cloud{t: t, dir: t.TempDir(), log: new(bytes.Buffer), logMu: new(sync.Mutex),
			admin: admin, https: https, dns: dns, ip: ip, env: []string{"GATEHOUSE_PG=" + dsn}}
		if opt.pki {
			// Caddy's data folder (cloudtest.CaddyEnv) is the shared one.
			if err := os.Symlink(sharedData, filepath.Join(c.dir, "data")); err != nil {
				t.Fatal(err)
			}
		}
		// Two passes: the certificate lines hold placeholders too.
		caddyfile := strings.NewReplacer("%LINKCERT%", linkCert, "%PKI%", pkiGlobal).Replace(clusterCaddyfile)
		caddyfile = strings.Replace(caddyfile, "\t\tcluster {", opt.extra+"\t\tcluster {", 1)
		r := strings.NewReplacer("%IP%", ip, "%ADMIN%", fmt.Sprint(admin), "%HTTPS%", fmt.Sprint(https),
			"%HTTP%", fmt.Sprint(http), "%LINK%", fmt.Sprint(link), "%DNS%", fmt.Sprint(dns), "%NODE%", name, "%CERTS%", certs)
		if err := os.WriteFile(filepath.Join(c.dir, "Caddyfile"), []byte(r.Replace(caddyfile)), 0o600); err != nil {
			t.Fatal(err)
		}
		nodes[i] = c
		t.Cleanup(c.stop)
		start := func() {
			c.start()
			c.waitWildcard()
		}
		if opt.pki && i == 0 {
			// The first node makes the shared CAs; the others, started
			// together with it, would each make their own.
			start()
			continue
		}
		// The nodes start side by side: a Caddy start is mostly waiting
		// for its local CA.
		wg.Go(start)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return nodes
}

// kill ends the node's Caddy with SIGKILL: no goodbye to the cluster.
func (c *cloud) kill() {
	c.t.Helper()
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.stopped
	c.cmd = nil
}

// Three nodes on one PostgreSQL: a gateway whose agent is connected to
// node 1 is reached with its own certificate through each node (nodes 2
// and 3 relay over the link); when the agent goes, every node gives the
// offline page; when node 1 is killed with the agent connected to it, the
// others give the offline page within its lease.
func TestClusterThreeNodes(t *testing.T) {
	testtools.Binary(t, "psql", "postgresql-client")
	nodes := startClusterNodes(t, 3, clusterOptions{})
	n1 := nodes[0]
	token := subscribe(t, n1, "home")
	cert := newGatewayCert(t, "home")
	gw := gatewayServer(t, cert, "hello from home")
	upstream := strings.TrimPrefix(gw.URL, "https://")

	reachedEverywhere := func() {
		t.Helper()
		for i, c := range nodes {
			var r curlResult
			testtools.Eventually(t, 10*time.Second, fmt.Sprintf("home through node %d", i+1), func() bool {
				var err error
				r, err = tryCurlTLS(t, c, "home.box.test", "/", cert.file)
				return err == nil && r.code == 200
			})
			if !strings.Contains(r.body, "hello from home") || !strings.Contains(r.certLine("subject"), cert.org) {
				t.Fatalf("node %d: %d %q, certificate %q: not the gateway's own", i+1, r.code, r.body, r.certLine("subject"))
			}
		}
	}
	offlineOn := func(what string, nodes ...*cloud) {
		t.Helper()
		for _, c := range nodes {
			testtools.Eventually(t, 10*time.Second, "the offline page on "+c.host()+" "+what, func() bool {
				code, body, err := c.tryCurl("home.box.test", "/")
				return err == nil && code == 503 && strings.Contains(string(body), "offline")
			})
		}
	}

	steeredTo := func(want ...string) {
		t.Helper()
		for _, c := range nodes {
			testtools.Eventually(t, 5*time.Second, fmt.Sprintf("dig @%s home.box.test: %v", c.host(), want), func() bool {
				got := testtools.DigAt(t, c.host(), c.dns, "+short", "home.box.test", "A")
				slices.Sort(got)
				return slices.Equal(got, want)
			})
		}
	}
	// Nobody holds home: every live node.
	steeredTo("127.0.0.1", "127.0.0.2", "127.0.0.3")
	ns := testtools.DigAt(t, "127.0.0.2", nodes[1].dns, "+short", "box.test", "NS")
	slices.Sort(ns)
	if want := []string{"node-1.box.test.", "node-2.box.test.", "node-3.box.test."}; !slices.Equal(ns, want) {
		t.Fatalf("NS from node 2: %v, want %v", ns, want)
	}

	// The agents learn the nodes from any node.
	code, listed := nodes[2].api("/v1/nodes", "-H", "Authorization: Bearer "+token)
	if got := fmt.Sprint(listed["nodes"]); code != 200 || !strings.Contains(got, "addrs:[127.0.0.1] name:node-1") || !strings.Contains(got, "addrs:[127.0.0.3] name:node-3") {
		t.Fatalf("GET /v1/nodes from node 3: %d %v", code, listed)
	}

	agent := startAgent(t, n1, "home", token, upstream, client.Backoff{})
	reachedEverywhere()
	steeredTo("127.0.0.1")
	m := adminMetrics(t, nodes[1])
	if v := metricValue(m, "gatehouse_cluster_nodes"); v != 3 {
		t.Errorf("node 2 counts %v nodes", v)
	}
	if v := metricValue(m, `gatehouse_cluster_relay_streams_total{direction="out"}`); v < 1 {
		t.Errorf("node 2 relayed %v streams", v)
	}
	if v := metricValue(adminMetrics(t, n1), "gatehouse_cluster_gateways_held"); v != 1 {
		t.Errorf("node 1 holds %v gateways", v)
	}
	if v := metricValue(m, `gatehouse_cluster_node_gateways_held{node="node-1"}`); v != 1 {
		t.Errorf("node 2 sees node 1 holding %v gateways", v)
	}
	if v := metricValue(m, "gatehouse_cluster_link_certificate_not_after_seconds"); v < float64(time.Now().Unix()) {
		t.Errorf("node 2's link certificate expires at %v", v)
	}
	// Every node's operator view says where home's tunnel is.
	for i, c := range nodes {
		var g adminapi.Gateway
		adminJSON(t, c, "/gatehouse/gateways/home", &g)
		if !g.Online || !slices.Equal(g.OnlineOn, []string{"node-1"}) || g.Node != "node-1" {
			t.Errorf("node %d shows home online %v on %v (node %q), want on node-1", i+1, g.Online, g.OnlineOn, g.Node)
		}
	}
	var st adminapi.Stats
	adminJSON(t, nodes[2], "/gatehouse/stats", &st)
	if st.Node != "node-3" || st.Online != 1 || !maps.Equal(st.Held, map[string]int{"node-1": 1, "node-2": 0, "node-3": 0}) {
		t.Errorf("stats from node 3: node %q, online %d, held %v", st.Node, st.Online, st.Held)
	}
	// The same through the operator's commands, on node 3.
	addr := "--address=" + net.JoinHostPort(nodes[2].host(), strconv.Itoa(nodes[2].admin))
	if out, errs, ok := runGatehouse(t, "list", "--online", "true", addr); !ok || !strings.Contains(out, "online@node-1") {
		t.Errorf("caddy gatehouse list --online true on node 3: %s%s", out, errs)
	}
	if out, errs, ok := runGatehouse(t, "stats", addr); !ok || !strings.Contains(out, "online (cluster, asked node-3)") ||
		!slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool { return slices.Equal(strings.Fields(l), []string{"held", "on", "node-1", "1"}) }) {
		t.Errorf("caddy gatehouse stats on node 3: %s%s", out, errs)
	}

	agent.stop()
	offlineOn("once the agent left", nodes...)

	startAgent(t, n1, "home", token, upstream, client.Backoff{})
	reachedEverywhere()
	start := time.Now()
	n1.kill()
	offlineOn("after node 1 was killed", nodes[1:]...)
	nodes = nodes[1:]
	steeredTo("127.0.0.2", "127.0.0.3")
	t.Logf("nodes 2 and 3 gave the offline page %v after node 1 was killed (lease 3s)", time.Since(start).Round(10*time.Millisecond))
}

// adminJSON decodes the answer of the node's admin API at path.
func adminJSON(t *testing.T, c *cloud, path string, v any) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s%s", net.JoinHostPort(c.host(), strconv.Itoa(c.admin)), path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s on %s: %d %s", path, c.host(), resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s on %s: %v in %s", path, c.host(), err, body)
	}
}

// Link certificates issued by each node from the pki app's CA: the nodes
// trust each other through it, and a gateway is reached through each.
func TestClusterPKICertificates(t *testing.T) {
	testtools.Binary(t, "psql", "postgresql-client")
	nodes := startClusterNodes(t, 2, clusterOptions{pki: true})
	token := subscribe(t, nodes[0], "home")
	cert := newGatewayCert(t, "home")
	gw := gatewayServer(t, cert, "hello from home")
	startAgent(t, nodes[0], "home", token, strings.TrimPrefix(gw.URL, "https://"), client.Backoff{})
	var r curlResult
	testtools.Eventually(t, 10*time.Second, "home through node 2", func() bool {
		var err error
		r, err = tryCurlTLS(t, nodes[1], "home.box.test", "/", cert.file)
		return err == nil && r.code == 200
	})
	if !strings.Contains(r.body, "hello from home") {
		t.Fatalf("node 2 answered %q", r.body)
	}
}
