// Command tunnelbench measures Gatehouse's tunnel frontend on loopback
// beside frp, in one interleaved run: bulk download throughput and the
// tunnel processes' CPU per GiB, the latency a small request gains (kept
// and new connections), concurrent downloads, and the cloud's memory per
// idle stream and per idle session. It starts the cloud (the Caddy binary
// given with -caddy), the gateway's TLS server and app, the agents (the
// binary given with -agent) and frps/frpc (-frp) itself;
// bench/tunnel/run.sh builds and runs it.
//
// Every loop is bounded in count and time, and all traffic stays on
// 127.0.0.1.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/bench/internal/benchcloud"
	"github.com/gatehouse-project/gatehouse/bench/internal/procs"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

var (
	caddyBin   = flag.String("caddy", "", "the cloud's Caddy binary (required)")
	frpDir     = flag.String("frp", "", "folder with frps and frpc, for the peer baseline; empty skips it")
	size       = flag.Int64("size", 256<<20, "bytes of the bulk download")
	rounds     = flag.Int("rounds", 3, "interleaved rounds of downloads (the median is kept)")
	latN       = flag.Int("latency-n", 1000, "requests per path over an established connection")
	setupN     = flag.Int("setup-n", 200, "requests per path with a new connection each")
	concN      = flag.Int("concurrent", 200, "concurrent downloads per path; 0 skips")
	concSize   = flag.Int64("concurrent-size", 1<<20, "bytes of each concurrent download")
	concRounds = flag.Int("concurrent-rounds", 2, "interleaved rounds of the concurrent downloads (the best is kept)")
	sessions   = flag.Int("sessions", 100, "idle sessions for the memory measurement")
	streams    = flag.Int("streams", 10000, "idle streams for the memory measurement, spread over the sessions; 0 skips it")
	timeLimit  = flag.Duration("time-limit", 20*time.Minute, "the whole run's bound")
	http1      = flag.Bool("http1", false, "curl downloads over HTTP/1.1 instead of the HTTP/2 it negotiates")
)

const zone = "box.test"

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("tunnelbench: ")
	if *caddyBin == "" || *agentBin == "" {
		log.Fatal("-caddy and -agent are required")
	}
	procs.Main("tunnelbench", func(g *procs.Group) error {
		b := &bench{Group: g, limit: procs.NewTimeLimit(*timeLimit)}
		return b.run()
	})
}

type bench struct {
	*procs.Group
	limit procs.TimeLimit
}

// ---- the cloud

// cloud is the benchmark's cloud (benchcloud's, as the other benchmarks
// run it), with the tunnel processes' GOMAXPROCS (TUNNEL_GOMAXPROCS).
type cloud struct{ *benchcloud.Cloud }

func (b *bench) startCloud(name string) (*cloud, error) {
	c, err := benchcloud.Start(b.Group, name, *caddyBin, "", tunnelEnv()...)
	if err != nil {
		return nil, err
	}
	return &cloud{c}, nil
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

// memory reads the cloud's resident set (from /proc) and its Go heap and
// stacks in use (from the admin endpoint's metrics) after a garbage
// collection, which the pprof heap endpoint runs when asked (gc=1), so
// that garbage not yet collected does not count.
func (c *cloud) memory() (rss, goMem float64, err error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", c.Admin))
	if err != nil {
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			rss = kb * 1024
		}
	}
	m, err := c.metrics()
	if err != nil {
		return 0, 0, err
	}
	return rss, m["go_memstats_heap_inuse_bytes"] + m["go_memstats_stack_inuse_bytes"], nil
}

func (c *cloud) metrics() (map[string]float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", c.Admin))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			m[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return m, sc.Err()
}

// ---- the gateway

func gatewayCert(dir string) (*testcert.Cert, error) {
	return testcert.SelfSigned(testcert.Options{
		Serial:   big.NewInt(1),
		Subject:  pkix.Name{CommonName: "bench." + zone, Organization: []string{"Gatehouse bench gateway"}},
		DNSNames: []string{"bench." + zone, "*." + zone},
	})
}

// startGatewayServer is the gateway's HTTPS server: /big?n=N sends N
// bytes, anything else a small page.
func startGatewayServer(cert tls.Certificate) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:   appHandler(),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return ln, nil
}

// startAppServer is the same app over plain HTTP: the upstream of the
// agent that terminates TLS.
func startAppServer() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: appHandler(), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(ln) }()
	return ln, nil
}

func appHandler() http.Handler {
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			_, _ = io.WriteString(w, "small response from the gateway\n")
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
	})
}

// agent runs a tunnel client for name until the run ends, and waits
// until it is connected.
func (b *bench) agent(c *cloud, name, token string, handler func(*tunnel.Stream)) (*client.Client, error) {
	cl := &client.Client{
		URL:        fmt.Sprintf("wss://api.box.test:%d/v1/tunnel", c.HTTPS),
		Name:       name,
		Token:      token,
		Handler:    handler,
		HTTPClient: &http.Client{Transport: dialTo(fmt.Sprintf("127.0.0.1:%d", c.HTTPS), &tls.Config{RootCAs: c.Roots})},
		Config:     tunnel.Config{AcceptBacklog: 1024},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cl.Run(ctx) }()
	b.OnStop(func() { cancel(); <-done })
	deadline := time.Now().Add(30 * time.Second)
	for !cl.State().Connected {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent %s did not connect: %v", name, cl.State().LastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cl, nil
}

// ---- throughput

// curlSpeed downloads path from host with curl, connecting to addr, and
// returns bytes/s.
func curlSpeed(cacert, addr, host, path string) (float64, error) {
	h, port, _ := net.SplitHostPort(addr)
	args := []string{"-sS", "--max-time", "600", "--cacert", cacert, "-o", "/dev/null",
		"-w", "%{speed_download} %{size_download}",
		"--resolve", host + ":" + port + ":" + h, "https://" + host + ":" + port + path}
	if *http1 {
		args = append(args, "--http1.1")
	}
	cmd := exec.Command("curl", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("curl: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return 0, fmt.Errorf("curl printed %q", out)
	}
	got, _ := strconv.ParseInt(f[1], 10, 64)
	if got != *size {
		return 0, fmt.Errorf("curl got %d bytes, want %d", got, *size)
	}
	return strconv.ParseFloat(f[0], 64)
}

// ---- latency

// latencyClient is the latency loops' HTTP/1.1 client for p, which keeps
// its connection or makes a new one for each request.
func latencyClient(pool *x509.CertPool, p *path, keepAlive bool) *http.Client {
	tr := dialTo(p.addr, &tls.Config{RootCAs: pool, ServerName: p.host})
	tr.DisableKeepAlives = !keepAlive
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1, as curl and the relay see it
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type latencyMode struct {
	name, short string
	keepAlive   bool
}

func latencyModes() []latencyMode {
	return []latencyMode{
		{"over an established connection", "kept", true},
		{"with connection setup (TCP + TLS handshake each)", "new", false},
	}
}

func latency(pool *x509.CertPool, paths []*path) error {
	frp := -1
	if paths[len(paths)-1].name == "frp" {
		frp = len(paths) - 1
	}
	fmt.Println("Latency of a small request and response (Go client, HTTP/1.1, the paths interleaved request by request):")
	for _, mode := range latencyModes() {
		n := *latN
		if !mode.keepAlive {
			n = *setupN
		}
		clients := make([]*http.Client, len(paths))
		for i, p := range paths {
			clients[i] = latencyClient(pool, p, mode.keepAlive)
		}
		ds := make([][]time.Duration, len(paths))
		for k := range n + 50 {
			for i := range paths {
				d, err := timeGet(clients[i], paths[i].host)
				if err != nil {
					return fmt.Errorf("%s request: %w", paths[i].name, err)
				}
				if k >= 50 { // warm-up
					ds[i] = append(ds[i], d)
				}
			}
		}
		for _, c := range clients {
			c.CloseIdleConnections()
		}
		fmt.Printf("  %s, %d requests each:\n", mode.name, n)
		d50, d99 := percentile(ds[0], 50), percentile(ds[0], 99)
		fmt.Printf("    %-24s p50 %8v  p99 %8v\n", paths[0].name, us(d50), us(d99))
		for i := 1; i < len(paths); i++ {
			a50, a99 := percentile(ds[i], 50)-d50, percentile(ds[i], 99)-d99
			fmt.Printf("    %-24s p50 %8v  p99 %8v   added p50 %8v  p99 %8v", paths[i].name,
				us(percentile(ds[i], 50)), us(percentile(ds[i], 99)), us(a50), us(a99))
			if frp > 0 && i != frp {
				f50 := percentile(ds[frp], 50) - d50
				fmt.Printf("   added p50 %.2fx frp's", float64(a50)/float64(f50))
			}
			fmt.Println()
		}
	}
	if frp > 0 {
		fmt.Println("  (target: added p50 <= 0.5x frp's)")
	}
	fmt.Println()
	return nil
}

func timeGet(c *http.Client, host string) (time.Duration, error) {
	start := time.Now()
	resp, err := c.Get("https://" + host + "/small")
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(start), err
}

// ---- memory

// memory measures a fresh cloud: idle, then with the idle sessions, then
// with the idle streams (each a TLS connection through the cloud whose
// handshake with the gateway is done, then silent).
func (b *bench) memory(cert tls.Certificate) error {
	c, err := b.startCloud("memcloud")
	if err != nil {
		return err
	}
	names := make([]string, *sessions)
	tokens := make([]string, *sessions)
	for i := range names {
		names[i] = fmt.Sprintf("idle%d", i)
		if tokens[i], err = c.Subscribe(names[i]); err != nil {
			return err
		}
	}
	settle := func() (float64, float64, error) {
		time.Sleep(3 * time.Second)
		return c.memory()
	}
	rss0, go0, err := settle()
	if err != nil {
		return err
	}
	// Each stream: the agent terminates TLS itself and then waits.
	var gwConns sync.WaitGroup
	var stopping = make(chan struct{})
	b.OnStop(func() { close(stopping); gwConns.Wait() })
	handler := func(st *tunnel.Stream) {
		if err := st.Ack(true, ""); err != nil {
			return
		}
		tc := tls.Server(st, &tls.Config{Certificates: []tls.Certificate{cert}})
		gwConns.Add(1)
		defer gwConns.Done()
		go func() { <-stopping; _ = tc.Close() }()
		_, _ = io.Copy(io.Discard, tc)
	}
	for i := range names {
		if _, err := b.agent(c, names[i], tokens[i], handler); err != nil {
			return err
		}
	}
	rss1, go1, err := settle()
	if err != nil {
		return err
	}

	conns := make([]net.Conn, 0, *streams)
	defer func() {
		for _, cn := range conns {
			_ = cn.Close()
		}
	}()
	var mu sync.Mutex
	work := make(chan int)
	var wg sync.WaitGroup
	var firstErr error
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := names[i%len(names)]
				d := &net.Dialer{Timeout: 10 * time.Second}
				cn, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", c.HTTPS),
					&tls.Config{ServerName: name + "." + zone, InsecureSkipVerify: true})
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("idle stream %d: %w", i, err)
				}
				if err == nil {
					conns = append(conns, cn)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range *streams {
		if b.limit.Passed() {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	rss2, go2, err := settle()
	if err != nil {
		return err
	}
	m, err := c.metrics()
	if err != nil {
		return err
	}
	n := float64(len(conns))
	fmt.Printf("Cloud memory, idle (%d sessions, then %d streams over them; each stream a TLS connection through the cloud, handshake done, silent):\n", *sessions, len(conns))
	fmt.Printf("  relays active per the cloud's metrics: %.0f\n", m["gatehouse_ingress_active_relays"])
	fmt.Printf("  per idle stream:  RSS %s, Go heap+stacks %s   (target <= 32 KiB)\n", kib((rss2-rss1)/n), kib((go2-go1)/n))
	fmt.Printf("  per idle session: RSS %s, Go heap+stacks %s\n", kib((rss1-rss0)/float64(*sessions)), kib((go1-go0)/float64(*sessions)))
	fmt.Printf("  cloud RSS: %s idle, %s with sessions, %s with streams\n", human(int64(rss0)), human(int64(rss1)), human(int64(rss2)))
	return nil
}

// ---- formatting

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func percentile(v []time.Duration, p int) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func mbs(bps float64) string { return fmt.Sprintf("%.0f MB/s", bps/1e6) }

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/1e3) }

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

func human(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}
