// Command forwardbench measures agent-to-agent forwarding on loopback, in
// one run, against the same transfer made directly to the destination:
// bulk throughput both ways, and the latency a small request/response gains
// (over an established connection, and with a new connection each time).
// It starts the cloud (the Caddy binary given with -caddy) with a forward
// rule, two real gateway agents (-agent), and the destination servers
// itself; bench/forward/run.sh builds and runs it.
//
// Every loop is bounded in count and time, and all traffic stays on
// 127.0.0.1.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/gatehouse-project/gatehouse/bench/internal/procs"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

var (
	caddyBin  = flag.String("caddy", "", "the cloud's Caddy binary (required)")
	agentBin  = flag.String("agent", "", "the gateway-agent binary (required)")
	size      = flag.Int64("size", 1<<30, "bytes of each bulk transfer")
	rounds    = flag.Int("rounds", 3, "bulk transfers per path and direction (the median is kept)")
	latN      = flag.Int("latency-n", 2000, "request/responses per path over an established connection")
	setupN    = flag.Int("setup-n", 200, "request/responses per path with a new connection each")
	msgSize   = flag.Int("msg", 64, "bytes of each request and response")
	timeLimit = flag.Duration("time-limit", 15*time.Minute, "the whole run's bound")
)

// The two gateways' MACs and the provisional names the cloud derives.
const (
	targetMAC, targetName = "02:00:00:00:b0:01", "gw-02000000b001"
	sourceMAC, sourceName = "02:00:00:00:b0:02", "gw-02000000b002"
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("forwardbench: ")
	if *caddyBin == "" || *agentBin == "" {
		log.Fatal("-caddy and -agent are required")
	}
	procs.Main("forwardbench", func(g *procs.Group) error {
		b := &bench{Group: g, limit: procs.NewTimeLimit(*timeLimit)}
		return b.run()
	})
}

type bench struct {
	*procs.Group
	limit procs.TimeLimit
}

// start runs bin, its output in NAME.log.
func (b *bench) start(name string, env []string, bin string, args ...string) error {
	_, err := b.Start(name, env, bin, args...)
	return err
}

// waitFor polls cond every 100ms until it holds or timeout passes.
func waitFor(what string, timeout time.Duration, cond func() bool) error {
	return cloudtest.WaitFor(what, timeout, 100*time.Millisecond, cond)
}

func (b *bench) run() error {
	// The destinations: a bulk server (sends -size bytes, or counts what
	// it receives, by the first byte) and an echo server.
	bulk, err := b.serve(serveBulk)
	if err != nil {
		return err
	}
	echo, err := b.serve(serveEcho)
	if err != nil {
		return err
	}
	https, err := b.startCloud()
	if err != nil {
		return err
	}
	root := cloudtest.LocalCARoot(filepath.Join(b.Dir, "cloud"))

	allow := fmt.Sprintf(`[{"to":["127.0.0.1"],"ports":[%d,%d],"from":[%q]}]`, bulk.Port, echo.Port, sourceName)
	targetSetup, err := b.startAgent("target", targetMAC, https, root, "-forward-allow", allow)
	if err != nil {
		return err
	}
	bulkLocal, err := cloudtest.FreeTCPPort()
	if err != nil {
		return err
	}
	echoLocal, err := cloudtest.FreeTCPPort()
	if err != nil {
		return err
	}
	fwds := fmt.Sprintf(`[{"local":"%d","gateway":%q,"ip":"127.0.0.1","remote":%d},{"local":"%d","gateway":%q,"ip":"127.0.0.1","remote":%d}]`,
		bulkLocal, targetName, bulk.Port, echoLocal, targetName, echo.Port)
	sourceSetup, err := b.startAgent("source", sourceMAC, https, root, "-forwards", fwds)
	if err != nil {
		return err
	}
	for _, s := range []int{targetSetup, sourceSetup} {
		if err := waitFor("the agents' tunnels", 90*time.Second, func() bool { return tunnelUp(s) }); err != nil {
			return err
		}
	}

	paths := []struct {
		name       string
		bulk, echo string
	}{
		{"direct", bulk.String(), echo.String()},
		{"forwarded", fmt.Sprintf("127.0.0.1:%d", bulkLocal), fmt.Sprintf("127.0.0.1:%d", echoLocal)},
	}
	// A first small transfer on each path, so that neither pays for
	// first-use costs in the figures.
	for _, p := range paths {
		if _, err := transfer(p.bulk, 'd', 1<<20); err != nil {
			return fmt.Errorf("%s warm-up: %w", p.name, err)
		}
	}
	fmt.Printf("Gatehouse agent-to-agent forwarding benchmark: client → source agent → cloud → target agent → server,\n"+
		"against client → server directly (loopback, %d cores shared by all of them)\n\n", runtime.NumCPU())

	// 1. Throughput, download (server to client) and upload.
	fmt.Printf("1. Throughput, %d MiB per transfer, median of %d\n", *size>>20, *rounds)
	for _, dir := range []struct {
		name string
		mode byte
	}{{"download", 'd'}, {"upload", 'u'}} {
		var rates [2][]float64
		for r := range *rounds {
			// Alternate the paths so that a slow moment hits both.
			for i, p := range paths {
				if err := b.limit.Check(); err != nil {
					return err
				}
				d, err := transfer(p.bulk, dir.mode, *size)
				if err != nil {
					return fmt.Errorf("%s %s round %d: %w", p.name, dir.name, r, err)
				}
				rates[i] = append(rates[i], float64(*size)/d.Seconds()/(1<<20))
			}
		}
		direct, fwd := median(rates[0]), median(rates[1])
		fmt.Printf("   %-8s  direct %7.0f MiB/s   forwarded %7.0f MiB/s   ratio %.2f\n", dir.name, direct, fwd, fwd/direct)
	}

	// 2. Latency over an established connection.
	fmt.Printf("\n2. Latency of a %d-byte request/response over an established connection, n=%d\n", *msgSize, *latN)
	var lat [2][]time.Duration
	for i, p := range paths {
		if err := b.limit.Check(); err != nil {
			return err
		}
		if lat[i], err = echoLatency(p.echo, *latN, false); err != nil {
			return fmt.Errorf("%s latency: %w", p.name, err)
		}
	}
	printLatency(lat)

	// 3. With a new connection each time (the forwarding opens a stream
	// through the cloud to the target, which dials the server).
	fmt.Printf("\n3. Latency of connect + one %d-byte request/response, n=%d\n", *msgSize, *setupN)
	for i, p := range paths {
		if err := b.limit.Check(); err != nil {
			return err
		}
		if lat[i], err = echoLatency(p.echo, *setupN, true); err != nil {
			return fmt.Errorf("%s setup latency: %w", p.name, err)
		}
	}
	printLatency(lat)
	return nil
}

func printLatency(lat [2][]time.Duration) {
	d50, d99 := percentile(lat[0], 50), percentile(lat[0], 99)
	f50, f99 := percentile(lat[1], 50), percentile(lat[1], 99)
	fmt.Printf("   direct     p50 %8s   p99 %8s\n", d50, d99)
	fmt.Printf("   forwarded  p50 %8s   p99 %8s\n", f50, f99)
	fmt.Printf("   added      p50 %8s   p99 %8s   ratio p50 %.1fx, p99 %.1fx\n", f50-d50, f99-d99, float64(f50)/float64(d50), float64(f99)/float64(d99))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func percentile(v []time.Duration, p int) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)].Round(time.Microsecond)
}

// serve runs handle for each connection to a new loopback listener until
// the run ends.
func (b *bench) serve(handle func(net.Conn)) (*net.TCPAddr, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b.Close(ln)
	go func() {
		// Ends when StopAll closes the listener.
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(*timeLimit))
				handle(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr), nil
}

// serveBulk reads a mode byte and an 8-byte length: 'd' sends that many
// bytes, 'u' reads that many and answers one byte.
func serveBulk(c net.Conn) {
	hdr := make([]byte, 9)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return
	}
	n := int64(0)
	for _, x := range hdr[1:] {
		n = n<<8 | int64(x)
	}
	switch hdr[0] {
	case 'd':
		_, _ = io.Copy(c, io.LimitReader(zeros{}, n))
	case 'u':
		if got, _ := io.Copy(io.Discard, io.LimitReader(c, n)); got == n {
			_, _ = c.Write([]byte{1})
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// serveEcho answers each fixed-size request with as many bytes.
func serveEcho(c net.Conn) {
	buf := make([]byte, *msgSize)
	for range *latN + 1 {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// transfer runs one bulk transfer through addr and returns its duration.
func transfer(addr string, mode byte, n int64) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	hdr := []byte{mode, 0, 0, 0, 0, 0, 0, 0, 0}
	for i := range 8 {
		hdr[8-i] = byte(n >> (8 * i))
	}
	start := time.Now()
	if _, err := c.Write(hdr); err != nil {
		return 0, err
	}
	switch mode {
	case 'd':
		got, err := io.Copy(io.Discard, c)
		if err != nil || got != n {
			return 0, fmt.Errorf("received %d of %d bytes: %v", got, n, err)
		}
	case 'u':
		if _, err := io.Copy(c, io.LimitReader(zeros{}, n)); err != nil {
			return 0, err
		}
		ack := make([]byte, 1)
		if _, err := io.ReadFull(c, ack); err != nil {
			return 0, fmt.Errorf("upload not acknowledged: %w", err)
		}
	}
	return time.Since(start), nil
}

// echoLatency times n request/responses, on one connection or a new one
// each time.
func echoLatency(addr string, n int, fresh bool) ([]time.Duration, error) {
	req, resp := bytes.Repeat([]byte("q"), *msgSize), make([]byte, *msgSize)
	out := make([]time.Duration, 0, n)
	var c net.Conn
	dial := func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		}
		return err
	}
	if !fresh {
		if err := dial(); err != nil {
			return nil, err
		}
		defer c.Close()
	}
	for range n {
		start := time.Now()
		if fresh {
			if err := dial(); err != nil {
				return nil, err
			}
		}
		if _, err := c.Write(req); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
		if fresh {
			_ = c.Close()
		}
	}
	return out, nil
}

// startCloud runs the cloud with a rule that lets the source reach the
// target, and returns its HTTPS port once its API answers.
func (b *bench) startCloud() (int, error) {
	dir := filepath.Join(b.Dir, "cloud")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	var ports [3]int
	for i := range ports {
		p, err := cloudtest.FreeTCPPort()
		if err != nil {
			return 0, err
		}
		ports[i] = p
	}
	cf := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	https_port %d
	local_certs
	skip_install_trust
	log {
		level WARN
	}
	gatehouse {
		zone box.test
		storage sqlite %s/registry.db
		forward {
			allow %s %s
		}
	}
}
api.box.test {
	gatehouse
}
`, ports[0], ports[1], ports[2], dir, sourceName, targetName)
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(cf), 0o600); err != nil {
		return 0, err
	}
	if err := b.start("cloud", cloudtest.CaddyEnv(dir), *caddyBin, "run", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile"); err != nil {
		return 0, err
	}
	root := cloudtest.LocalCARoot(dir)
	err := waitFor("the cloud's API", 60*time.Second, func() bool {
		pem, err := os.ReadFile(root)
		if err != nil {
			return false
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "api.box.test"},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", ports[2]))
			},
		}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(fmt.Sprintf("https://api.box.test:%d/connectivity-check", ports[2]))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return ports[2], err
}

// startAgent runs a gateway agent in passthrough mode (its tunnel opens
// without a certificate: the benchmark needs no ACME CA) and returns its
// setup port, where its status is served.
func (b *bench) startAgent(name, mac string, https int, root string, extra ...string) (int, error) {
	setup, err := cloudtest.FreeTCPPort()
	if err != nil {
		return 0, err
	}
	args := append([]string{"run",
		"-cloud", fmt.Sprintf("https://api.box.test:%d", https), "-cloud-ca", root, "-resolve", "api.box.test=127.0.0.1",
		"-passthrough", "-upstream", "127.0.0.1:9", "-acme-ca", "https://127.0.0.1:1/dir",
		"-mac", mac, "-state-dir", filepath.Join(b.Dir, name, "state"), "-mdns=false", "-https-listen=", "-api-listen=",
		"-setup-listen", "127.0.0.1:" + strconv.Itoa(setup), "-local-addrs", "192.0.2.1", "-ping-interval", "1m", "-log-level", "warn"}, extra...)
	return setup, b.start("agent-"+name, nil, *agentBin, args...)
}

func tunnelUp(setup int) bool {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/api/status", setup))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st struct {
		Tunnel struct {
			Connected bool `json:"connected"`
		} `json:"tunnel"`
	}
	return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Tunnel.Connected
}
