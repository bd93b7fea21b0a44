// Command clusterbench measures what a cluster of cloud nodes costs and
// how fast it recovers, on loopback, in one run: three nodes (the Caddy
// binary given with -caddy) on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with the
// same ports, one PostgreSQL schema of their own, agents and the gateway's
// TLS server in this process.
//
//   - Throughput of one download of -size through the node that holds the
//     gateway's tunnel (direct) and through another node, which relays it
//     over the node-to-node link (relayed), in interleaved rounds; the
//     ratio relayed/direct (target >= 0.8).
//   - Latency of a small request through each, interleaved request by
//     request, over a kept connection and with a new connection each;
//     p50/p99 and what the relay adds (target <= 150 µs at p50, kept).
//   - Recovery after kill -9 of the holding node: the time until a request
//     through a surviving node that does not hold the gateway succeeds
//     again, for a gateway with one tunnel (dialed as the agent's DNS
//     tunnel: the first live node answering) and one with two (one on the
//     killed node, one on another), with the agent's default backoff.
//
// bench/cluster/run.sh builds and runs it. Every loop is bounded in count
// and time; all traffic stays on loopback.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/bench/internal/benchcloud"
	"github.com/gatehouse-project/gatehouse/bench/internal/procs"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

var (
	caddyBin   = flag.String("caddy", "", "the cloud's Caddy binary (required)")
	pgDSN      = flag.String("pg", "", "PostgreSQL DSN; the run works in a schema of its own, dropped at the end (required)")
	size       = flag.Int64("size", 1<<30, "bytes of the bulk download")
	rounds     = flag.Int("rounds", 3, "interleaved rounds of downloads (the median is kept)")
	latN       = flag.Int("latency-n", 1000, "small requests per path over a kept connection")
	setupN     = flag.Int("setup-n", 200, "small requests per path with a new connection each")
	recRounds  = flag.Int("recovery-rounds", 3, "kill -9 rounds (the node is restarted between rounds)")
	lease      = flag.Duration("lease", 3*time.Second, "the nodes' membership lease")
	timeLimit  = flag.Duration("time-limit", 15*time.Minute, "the whole run's bound")
	cpuProfile = flag.String("cpuprofile", "", "directory for CPU profiles of node-1 and node-2 taken during the last relayed download (none when empty)")
	nodeCount  = 3
	zone       = benchcloud.Zone
	probeEvery = 10 * time.Millisecond
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("clusterbench: ")
	if *caddyBin == "" || *pgDSN == "" {
		log.Fatal("-caddy and -pg are required")
	}
	procs.Main("clusterbench", func(g *procs.Group) error {
		b := &bench{Group: g, limit: procs.NewTimeLimit(*timeLimit)}
		return b.run()
	})
}

type bench struct {
	*procs.Group
	limit procs.TimeLimit
	nodes []*node
	// gwCertFile is the gateway's certificate (for every NAME.ZONE), which
	// clients trust: the nodes pass TLS through untouched.
	gwCertFile string
	gwPool     *x509.CertPool
	gwAddr     string
	// cloudRoots holds every node's local CA, for the agents.
	cloudRoots *x509.CertPool
}

// ---- the nodes

type node struct {
	benchcloud.ClusterNode
	dir string
	env []string
	cmd *exec.Cmd
	// exited is closed once cmd has ended (the only Wait on it).
	exited chan struct{}
}

func (n *node) addr() string { return net.JoinHostPort(n.IP, strconv.Itoa(n.HTTPS)) }

// schema creates a schema of the run's own and returns the DSN that uses
// it, and how to drop it.
func schema(ctx context.Context) (string, func(), error) {
	conn, err := pgx.Connect(ctx, *pgDSN)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("clusterbench_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		conn.Close(ctx)
		return "", nil, err
	}
	u, err := url.Parse(*pgDSN)
	if err != nil {
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	drop := func() {
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE")
		conn.Close(context.Background())
	}
	return u.String(), drop, nil
}

func (b *bench) startNodes(dsn string) error {
	ca, err := testcert.NewCA(testcert.Options{DNSNames: []string{"clusterbench CA"}})
	if err != nil {
		return err
	}
	caFile := filepath.Join(b.Dir, "cluster-ca.crt")
	if err := ca.WriteCert(caFile); err != nil {
		return err
	}
	var ports [4]int
	for i := range ports {
		if ports[i], err = cloudtest.FreeTCPPort(); err != nil {
			return err
		}
	}
	for i := range nodeCount {
		n := &node{ClusterNode: benchcloud.ClusterNode{
			Name: fmt.Sprintf("node-%d", i+1), IP: fmt.Sprintf("127.0.0.%d", i+1),
			Admin: ports[0], HTTP: ports[1], HTTPS: ports[2], Link: ports[3],
			CAFile: caFile, Lease: lease.String(),
		}}
		n.dir = filepath.Join(b.Dir, n.Name)
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return err
		}
		cert, err := ca.Issue(testcert.Options{DNSNames: []string{n.Name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return err
		}
		n.CertFile, n.KeyFile = filepath.Join(n.dir, "link.crt"), filepath.Join(n.dir, "link.key")
		if err := errors.Join(cert.WriteCert(n.CertFile), cert.WriteKey(n.KeyFile)); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(n.dir, "Caddyfile"), benchcloud.ClusterCaddyfile(n.ClusterNode), 0o600); err != nil {
			return err
		}
		n.env = append(cloudtest.CaddyEnv(n.dir), "GATEHOUSE_PG="+dsn)
		b.nodes = append(b.nodes, n)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(b.nodes))
	for i, n := range b.nodes {
		wg.Go(func() { errs[i] = b.startNode(n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	b.cloudRoots = x509.NewCertPool()
	for _, n := range b.nodes {
		pemBytes, err := os.ReadFile(cloudtest.LocalCARoot(n.dir))
		if err != nil {
			return err
		}
		b.cloudRoots.AppendCertsFromPEM(pemBytes)
	}
	return b.waitMembers(b.nodes[len(b.nodes)-1], nodeCount)
}

// startNode runs the node's Caddy and waits until its API answers.
func (b *bench) startNode(n *node) error {
	cmd, err := b.Start(n.Name, n.env, *caddyBin, "run", "--config", filepath.Join(n.dir, "Caddyfile"), "--adapter", "caddyfile")
	if err != nil {
		return err
	}
	n.cmd = cmd
	exited := make(chan struct{})
	n.exited = exited
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start; see its log in %s", n.Name, b.Dir)
		case <-time.After(100 * time.Millisecond):
		}
		pemBytes, err := os.ReadFile(cloudtest.LocalCARoot(n.dir))
		if err != nil {
			continue
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pemBytes)
		hc := &http.Client{Timeout: 2 * time.Second, Transport: dialTo(n.addr(), &tls.Config{RootCAs: roots})}
		resp, err := hc.Get(fmt.Sprintf("https://api.%s:%d/connectivity-check", zone, n.HTTPS))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
	}
	return fmt.Errorf("%s did not come up in 60s", n.Name)
}

// kill ends the node's Caddy with SIGKILL: no goodbye to the cluster.
func (n *node) kill() {
	_ = n.cmd.Process.Kill()
	<-n.exited
}

// metric reads one sample from the node's Prometheus metrics (-1 when
// absent).
func (n *node) metric(series string) float64 {
	resp, err := http.Get(fmt.Sprintf("http://%s/metrics", net.JoinHostPort(n.IP, strconv.Itoa(n.Admin))))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return -1
}

// cpu is the CPU time so far, in seconds, of the nodes' processes and of
// this one (the agents and the gateway's server; curl is left out):
// whatever carries the bytes between curl and the server.
func (b *bench) cpu() float64 {
	t := procs.CPUSeconds(os.Getpid())
	for _, n := range b.nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			t += procs.CPUSeconds(n.cmd.Process.Pid)
		}
	}
	return t
}

// waitMembers waits until n counts want live nodes.
func (b *bench) waitMembers(n *node, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if n.metric("gatehouse_cluster_nodes") == float64(want) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s does not count %d nodes", n.Name, want)
}

func (b *bench) subscribe(n *node, name string) (string, error) {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: dialTo(n.addr(), &tls.Config{RootCAs: b.cloudRoots})}
	resp, err := hc.Get(fmt.Sprintf("https://api.%s:%d/subscribe?name=%s", zone, n.HTTPS, name))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sub struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&sub); err != nil || sub.Token == "" {
		return "", fmt.Errorf("subscribe %s: %d %v", name, resp.StatusCode, err)
	}
	return sub.Token, nil
}

// dialTo is a transport that connects to addr whatever the URL's host.
func dialTo(addr string, cfg *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 1,
	}
}

// ---- the gateway and its agents

func (b *bench) startGateway() error {
	c, err := testcert.SelfSigned(testcert.Options{
		Serial:   big.NewInt(1),
		Subject:  pkix.Name{CommonName: "*." + zone, Organization: []string{"Gatehouse cluster bench gateway"}},
		DNSNames: []string{"*." + zone},
	})
	if err != nil {
		return err
	}
	b.gwCertFile = filepath.Join(b.Dir, "gateway.pem")
	if err := c.WriteCert(b.gwCertFile); err != nil {
		return err
	}
	b.gwPool = c.Pool()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	chunk := make([]byte, 256<<10)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/big" {
				_, _ = io.WriteString(w, "ok\n")
				return
			}
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			for n > 0 {
				k := min(n, int64(len(chunk)))
				if _, err := w.Write(chunk[:k]); err != nil {
					return
				}
				n -= k
			}
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{c.TLS()}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	b.Close(srv)
	b.gwAddr = ln.Addr().String()
	return nil
}

// agent is one tunnel of a gateway, relaying every stream to the
// gateway's server as the agent does in passthrough. It dials the nodes in
// order, the first that answers: one node for a tunnel pinned to it, the
// nodes in order for the DNS tunnel of an agent with tunnel_connections 1.
type agent struct {
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func (b *bench) startAgent(name, token string, nodes []*node) *agent {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: b.cloudRoots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var errs []error
			for _, n := range nodes {
				d := net.Dialer{Timeout: time.Second}
				conn, err := d.DialContext(ctx, network, n.addr())
				if err == nil {
					return conn, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
	}
	a := &agent{done: make(chan struct{})}
	up := b.gwAddr
	a.c = &client.Client{
		URL:        fmt.Sprintf("wss://api.%s:%d/v1/tunnel", zone, nodes[0].HTTPS),
		Name:       name,
		Token:      token,
		HTTPClient: &http.Client{Transport: tr},
		// The agent's defaults (client.Backoff{}), as an agent in the
		// field runs.
		Handler: func(st *tunnel.Stream) {
			conn, err := net.DialTimeout("tcp", up, 5*time.Second)
			if err != nil {
				_ = st.Ack(false, "upstream unreachable")
				return
			}
			defer conn.Close()
			if st.Ack(true, "") != nil {
				return
			}
			relay.Conns(context.Background(), st, conn, relay.Counts{})
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { defer close(a.done); _ = a.c.Run(ctx) }()
	return a
}

func (a *agent) stop() { a.cancel(); <-a.done }

// ---- the client side

// gatewayClient fetches from gateway name through node n, trusting only
// the gateway's certificate; keep false opens a new connection for every
// request.
func (b *bench) gatewayClient(n *node, keep bool, timeout time.Duration) *http.Client {
	tr := dialTo(n.addr(), &tls.Config{RootCAs: b.gwPool})
	tr.DisableKeepAlives = !keep
	tr.ForceAttemptHTTP2 = false
	return &http.Client{Timeout: timeout, Transport: tr}
}

func get(hc *http.Client, name string, n *node, path string) error {
	resp, err := hc.Get(fmt.Sprintf("https://%s.%s:%d%s", name, zone, n.HTTPS, path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s through %s: %s", name, n.Name, resp.Status)
	}
	return nil
}

// waitReachable waits until name answers through every node.
func (b *bench) waitReachable(name string, nodes ...*node) error {
	for _, n := range nodes {
		hc := b.gatewayClient(n, false, 2*time.Second)
		deadline := time.Now().Add(20 * time.Second)
		for get(hc, name, n, "/") != nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s does not answer through %s", name, n.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func (b *bench) run() error {
	ctx := context.Background()
	dsn, drop, err := schema(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer drop()
	if err := b.startGateway(); err != nil {
		return err
	}
	if err := b.startNodes(dsn); err != nil {
		return err
	}
	fmt.Printf("Gatehouse cluster benchmark: %d nodes on 127.0.0.1-%d, one PostgreSQL, lease %v (loopback, %d cores shared by nodes, client, agents and server; load average %s)\n\n",
		nodeCount, nodeCount, *lease, runtime.NumCPU(), loadAvg())

	n1, n2 := b.nodes[0], b.nodes[1]
	token, err := b.subscribe(n1, "bench")
	if err != nil {
		return err
	}
	a := b.startAgent("bench", token, []*node{n1})
	defer a.stop()
	if err := b.waitReachable("bench", b.nodes...); err != nil {
		return err
	}
	paths := []benchPath{{"direct (node-1 holds the tunnel)", n1}, {"relayed (node-2 -> node-1)", n2}}
	if err := b.throughput(paths); err != nil {
		return err
	}
	if err := b.limit.Check(); err != nil {
		return err
	}
	if err := b.latency(paths); err != nil {
		return err
	}
	if err := b.limit.Check(); err != nil {
		return err
	}
	a.stop()
	if *recRounds <= 0 { // RECOVERY_ROUNDS=0 skips the part
		return nil
	}
	return b.recovery()
}

type benchPath struct {
	name string
	node *node
}

// throughput downloads -size with curl through each path, the paths
// alternating in each round; the median of each is kept.
func (b *bench) throughput(paths []benchPath) error {
	curl, err := exec.LookPath("curl")
	if err != nil {
		return errors.New("curl not found: apt-get install curl")
	}
	fmt.Printf("1. Download of %d MiB with curl, %d interleaved rounds (median)\n", *size>>20, *rounds)
	speeds := make([][]float64, len(paths))
	cpu := make([]float64, len(paths))
	for r := range *rounds {
		for i, p := range paths {
			if err := b.limit.Check(); err != nil {
				return err
			}
			cpu0 := b.cpu()
			var profiled func() error
			if *cpuProfile != "" && i == 1 && r == *rounds-1 {
				// As long as the last direct download took: the
				// relayed one takes about as long.
				profiled = b.profile(time.Duration(float64(*size) / (speeds[0][r] * (1 << 20)) * float64(time.Second)))
			}
			host := "bench." + zone
			out, err := exec.Command(curl, "-sS", "--max-time", "600", "--cacert", b.gwCertFile,
				"--resolve", fmt.Sprintf("%s:%d:%s", host, p.node.HTTPS, p.node.IP),
				"-o", "/dev/null", "-w", "%{size_download} %{time_total}",
				fmt.Sprintf("https://%s:%d/big?n=%d", host, p.node.HTTPS, *size)).CombinedOutput()
			if err != nil {
				return fmt.Errorf("download through %s: %v %s", p.name, err, out)
			}
			var got int64
			var secs float64
			if _, err := fmt.Sscan(string(out), &got, &secs); err != nil || got != *size {
				return fmt.Errorf("download through %s: %q", p.name, out)
			}
			cpu[i] += b.cpu() - cpu0
			speeds[i] = append(speeds[i], float64(got)/secs/(1<<20))
			fmt.Printf("   round %d %-34s %8.1f MiB/s\n", r+1, p.name, speeds[i][len(speeds[i])-1])
			if profiled != nil {
				if err := profiled(); err != nil {
					return err
				}
			}
		}
	}
	med := make([]float64, len(paths))
	for i, p := range paths {
		med[i] = median(speeds[i])
		gib := float64(*size) * float64(*rounds) / (1 << 30)
		fmt.Printf("   %-42s median %8.1f MiB/s, CPU %.2f s/GiB (nodes, agent and server)\n", p.name, med[i], cpu[i]/gib)
	}
	// Each round's pair ran back to back, under the same load from the
	// rest of the machine: the median of the rounds' ratios is the
	// steadier figure when that load changes during the run.
	ratios := make([]float64, len(speeds[0]))
	for r := range ratios {
		ratios[r] = speeds[1][r] / speeds[0][r]
	}
	fmt.Printf("   relayed/direct: %.2f of the medians, %.2f median of the rounds' ratios %.2f (target >= 0.80)\n\n",
		med[1]/med[0], median(ratios), ratios)
	return nil
}

// profile starts CPU profiles of node-1 (holds the tunnel) and node-2 (relays
// to it) over d, from their admin endpoints; the returned wait writes them
// to -cpuprofile as node-1.pprof and node-2.pprof.
func (b *bench) profile(d time.Duration) (wait func() error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	errs := make(chan error, 2)
	for _, n := range b.nodes[:2] {
		go func() {
			errs <- func() error {
				resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", net.JoinHostPort(n.IP, strconv.Itoa(n.Admin)), secs))
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("%s", resp.Status)
				}
				f, err := os.Create(filepath.Join(*cpuProfile, n.Name+".pprof"))
				if err != nil {
					return err
				}
				if _, err := io.Copy(f, resp.Body); err != nil {
					_ = f.Close()
					return err
				}
				return f.Close()
			}()
		}()
	}
	return func() error {
		for range 2 {
			if err := <-errs; err != nil {
				return fmt.Errorf("cpu profile: %w", err)
			}
		}
		fmt.Printf("   CPU profiles of node-1 and node-2 (%ds of the last relayed download) in %s\n", secs, *cpuProfile)
		return nil
	}
}

// latency times small requests through each path, interleaved request by
// request, over a kept connection and with a new connection each.
func (b *bench) latency(paths []benchPath) error {
	for _, mode := range []struct {
		label string
		keep  bool
		n     int
	}{{"2a", true, *latN}, {"2b", false, *setupN}} {
		conn := map[bool]string{true: "kept connection", false: "new connection each"}[mode.keep]
		fmt.Printf("%s. Small request (GET /, 3 bytes), %s, %d per path, interleaved\n", mode.label, conn, mode.n)
		clients := make([]*http.Client, len(paths))
		samples := make([][]time.Duration, len(paths))
		for i, p := range paths {
			clients[i] = b.gatewayClient(p.node, mode.keep, 10*time.Second)
			// Warm up: the connection, and the relay's link session.
			for range 10 {
				if err := get(clients[i], "bench", p.node, "/"); err != nil {
					return err
				}
			}
		}
		for range mode.n {
			if err := b.limit.Check(); err != nil {
				return err
			}
			for i, p := range paths {
				start := time.Now()
				if err := get(clients[i], "bench", p.node, "/"); err != nil {
					return err
				}
				samples[i] = append(samples[i], time.Since(start))
			}
		}
		var p50, p99 [2]time.Duration
		for i, p := range paths {
			p50[i], p99[i] = percentile(samples[i], 50), percentile(samples[i], 99)
			fmt.Printf("   %-42s p50 %8v  p99 %8v\n", p.name, p50[i].Round(time.Microsecond), p99[i].Round(time.Microsecond))
			clients[i].CloseIdleConnections()
		}
		target := ""
		if mode.keep {
			target = " (target p50 <= 150µs)"
		}
		fmt.Printf("   added by the relay: p50 %v, p99 %v%s\n\n", (p50[1] - p50[0]).Round(time.Microsecond), (p99[1] - p99[0]).Round(time.Microsecond), target)
	}
	return nil
}

// recovery kills the node that holds the tunnels with SIGKILL, and times
// until a request through node-3 (which holds nothing) succeeds again: for
// "one", whose single tunnel dials the nodes in order (node-1 first), and
// for "two", with a tunnel on node-1 and one on node-2. node-1 is restarted
// between rounds and the agents start afresh.
func (b *bench) recovery() error {
	n1, n2, n3 := b.nodes[0], b.nodes[1], b.nodes[2]
	fmt.Printf("3. Recovery after kill -9 of node-1 (holding the tunnels), requests through node-3 every %v, new connection each, %d rounds\n", probeEvery, *recRounds)
	tokOne, err := b.subscribe(n2, "one")
	if err != nil {
		return err
	}
	tokTwo, err := b.subscribe(n2, "two")
	if err != nil {
		return err
	}
	var one, two []time.Duration
	var twoFailed []int
	for r := range *recRounds {
		if err := b.limit.Check(); err != nil {
			return err
		}
		agents := []*agent{
			b.startAgent("one", tokOne, b.nodes),
			b.startAgent("two", tokTwo, []*node{n1}),
			b.startAgent("two", tokTwo, []*node{n2}),
		}
		stopAgents := func() {
			for _, a := range agents {
				a.stop()
			}
		}
		if err := b.waitHeld(n3, "one", n1); err != nil {
			stopAgents()
			return err
		}
		if err := b.waitHeld(n3, "two", n1, n2); err != nil {
			stopAgents()
			return err
		}
		killed := time.Now()
		n1.kill()
		var wg sync.WaitGroup
		var dOne, dTwo time.Duration
		var errOne, errTwo error
		var failedTwo int
		wg.Go(func() { dOne, _, errOne = b.probe(n3, "one", killed) })
		wg.Go(func() { dTwo, failedTwo, errTwo = b.probe(n3, "two", killed) })
		wg.Wait()
		stopAgents()
		if err := errors.Join(errOne, errTwo); err != nil {
			return err
		}
		one, two, twoFailed = append(one, dOne), append(two, dTwo), append(twoFailed, failedTwo)
		fmt.Printf("   round %d: one tunnel %v, two tunnels %v (%d failed requests)\n", r+1, dOne.Round(time.Millisecond), dTwo.Round(time.Millisecond), failedTwo)
		if err := b.startNode(n1); err != nil {
			return err
		}
		if err := b.waitMembers(n3, nodeCount); err != nil {
			return err
		}
	}
	fmt.Printf("   one tunnel:  median %v, max %v (target <= 5s)\n", median(one).Round(time.Millisecond), slices.Max(one).Round(time.Millisecond))
	fmt.Printf("   two tunnels: median %v, max %v, failed requests per kill %v\n", median(two).Round(time.Millisecond), slices.Max(two).Round(time.Millisecond), twoFailed)
	return nil
}

// waitHeld waits until name answers through n with the nodes given
// holding it (an answer through each holder, then through n, which
// relays).
func (b *bench) waitHeld(n *node, name string, holders ...*node) error {
	if err := b.waitReachable(name, holders...); err != nil {
		return err
	}
	if err := b.waitReachable(name, n); err != nil {
		return err
	}
	// The directory change reaches n through PostgreSQL within
	// milliseconds; this leaves it time on a loaded machine.
	time.Sleep(500 * time.Millisecond)
	return nil
}

// probe requests name through n every probeEvery until one succeeds (at
// most 30 s), and returns the time from since, and the failed requests.
func (b *bench) probe(n *node, name string, since time.Time) (time.Duration, int, error) {
	hc := b.gatewayClient(n, false, time.Second)
	failed := 0
	for time.Since(since) < 30*time.Second {
		if get(hc, name, n, "/") == nil {
			return time.Since(since), failed, nil
		}
		failed++
		time.Sleep(probeEvery)
	}
	return 0, failed, fmt.Errorf("%s not back through %s within 30s", name, n.Name)
}

func median[T int64 | float64 | time.Duration](s []T) T {
	c := slices.Clone(s)
	slices.Sort(c)
	return c[len(c)/2]
}

func percentile(s []time.Duration, p int) time.Duration {
	c := slices.Clone(s)
	slices.Sort(c)
	return c[min(len(c)-1, len(c)*p/100)]
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
