// Command kitebench measures a bulk HTTPS download through one Debian
// pagekite kite, via Gatehouse's PageKite frontend and via PageKite's own
// frontend (pagekite --isfrontend), in one interleaved run: throughput,
// and the CPU the frontend and the kite spend per GiB. It starts
// everything itself: the gateway's TLS file server, the cloud (the Caddy
// binary given with -caddy, with a token_seal_key and a registered
// gateway), PageKite's frontend, and one kite for each frontend (the same
// binary and arguments, the gateway's token as the secret);
// bench/pagekite/run.sh builds and runs it.
//
// Every download has a timeout, the whole run a bound, and all traffic
// stays on 127.0.0.1.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse-project/gatehouse/bench/internal/benchcloud"
	"github.com/gatehouse-project/gatehouse/bench/internal/procs"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
	"github.com/gatehouse-project/gatehouse/internal/testtools/testcert"
)

var (
	caddyBin      = flag.String("caddy", "", "the cloud's Caddy binary (required)")
	pagekiteBin   = flag.String("pagekite", "pagekite", "the pagekite program (Debian's package pagekite), kite and PageKite's frontend")
	size          = flag.Int64("size", 256<<20, "bytes of the download")
	rounds        = flag.Int("rounds", 3, "interleaved rounds (the median is kept)")
	dlTimeout     = flag.Duration("download-timeout", 10*time.Minute, "bound of one download")
	timeLimit     = flag.Duration("time-limit", 30*time.Minute, "the whole run's bound")
	profileDir    = flag.String("profile", "", "folder for cloud.pprof, a CPU profile of the cloud during the first download through it; empty: none")
	profileSecs   = flag.Int("profile-seconds", 5, "length of that profile")
	peers         = flag.Bool("peers", true, "run PageKite's own frontend; false: only the Gatehouse paths")
	baselineCaddy = flag.String("baseline-caddy", "", "a second Caddy binary (say, the build before a change), run as the path gatehouse-baseline beside the first")
	uncapped      = flag.Bool("uncapped", true, "also run PageKite's frontend with --select_loop_min_ms=0")
)

// gateway is the kite's name: the same for both frontends.
const gateway = "bench"

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("kitebench: ")
	if *caddyBin == "" {
		log.Fatal("-caddy is required")
	}
	bin, err := exec.LookPath(*pagekiteBin)
	if err != nil {
		log.Fatalf("%v: apt-get install pagekite", err)
	}
	*pagekiteBin = bin
	dir, err := os.MkdirTemp("", "kitebench-")
	if err != nil {
		log.Fatal(err)
	}
	b := &bench{Group: procs.Group{Dir: dir}, limit: procs.NewTimeLimit(*timeLimit)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ctx = ctx
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		// Interrupted: end what the run started (curl ends with ctx).
		log.Printf("%v: stopping", <-sig)
		cancel()
		b.StopAll()
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}()
	err = b.run()
	b.StopAll()
	if err != nil {
		// The logs say why a kite or frontend did not come up.
		log.Printf("logs kept in %s", dir)
		log.Fatal(err)
	}
	_ = os.RemoveAll(dir)
}

type bench struct {
	procs.Group
	ctx   context.Context
	limit procs.TimeLimit
}

// path is one way from curl to the file server: a frontend and its kite.
type path struct {
	name           string
	frontend, kite *exec.Cmd
	startKite      func(attempt int) (*exec.Cmd, error)
	restarts       int      // kites started again because they did not come back
	curlArgs       []string // how curl reaches https://bench.box.test through it
	client         *http.Client
	url            string
}

func (b *bench) run() error {
	host := gateway + "." + benchcloud.Zone
	cert, err := testcert.SelfSigned(testcert.Options{DNSNames: []string{host}})
	if err != nil {
		return err
	}
	certFile := filepath.Join(b.Dir, "gateway.pem")
	if err := cert.WriteCert(certFile); err != nil {
		return err
	}
	fsPort, err := b.fileServer(cert.TLS())
	if err != nil {
		return err
	}

	ours, c, token, err := b.gatehouse("gatehouse", *caddyBin, host, fsPort, cert.Pool())
	if err != nil {
		return err
	}
	paths := []*path{ours}
	if *baselineCaddy != "" {
		base, _, _, err := b.gatehouse("gatehouse-baseline", *baselineCaddy, host, fsPort, cert.Pool())
		if err != nil {
			return err
		}
		paths = append(paths, base)
	}

	// PageKite's own frontend, with the same kite name and secret: as
	// it comes, and (unless -uncapped=false) without the pause per loop
	// with which it caps a tunnel's rate (SELECT_LOOP_MIN_MS, 5 ms), so
	// that its CPU per byte shows too.
	type variant struct {
		name  string
		extra []string
	}
	var variants []variant
	if *peers {
		variants = append(variants, variant{"pagekite", nil})
	}
	if *peers && *uncapped {
		variants = append(variants, variant{"pagekite-0ms", []string{"--select_loop_min_ms=0"}})
	}
	for _, v := range variants {
		p, err := b.pagekiteFrontend(v.name, host, fsPort, token, cert.Pool(), v.extra...)
		if err != nil {
			return err
		}
		paths = append(paths, p)
	}
	for _, p := range paths {
		if err := waitPath(p, 60*time.Second); err != nil {
			return err
		}
	}
	fmt.Printf("PageKite benchmark: one HTTPS download of %s with curl through one Debian pagekite kite (%s), loopback, %d cores, load average %s\n",
		human(*size), pagekiteVersion(), numCPU(), loadAvg())
	fmt.Println("  gatehouse: curl -> the cloud's HTTPS port (Caddy, modules/pagekite) -> kite -> TLS file server")
	if *baselineCaddy != "" {
		fmt.Println("  gatehouse-baseline: the same through a cloud built from -baseline-caddy")
	}
	if *peers {
		fmt.Println("  pagekite:  curl -> CONNECT bench.box.test:443 to pagekite --isfrontend -> kite -> the same server")
	}
	if *peers && *uncapped {
		fmt.Println("  pagekite-0ms: the same with --select_loop_min_ms=0 (no 5 ms pause per loop, which caps a tunnel's rate)")
	}
	return b.throughput(paths, certFile, c)
}

// gatehouse starts a cloud (the Caddy binary caddyBin) with a seal key,
// so that it can compute a kite's signature from the gateway's token,
// registers the gateway, and starts its kite with the token as secret.
func (b *bench) gatehouse(name, caddyBin, host string, fsPort int, roots *x509.CertPool) (*path, *benchcloud.Cloud, string, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	c, err := benchcloud.Start(&b.Group, name, caddyBin, "token_seal_key {env.GATEHOUSE_SEAL_KEY}",
		"GATEHOUSE_SEAL_KEY="+hex.EncodeToString(key))
	if err != nil {
		return nil, nil, "", err
	}
	token, err := c.Subscribe(gateway)
	if err != nil {
		return nil, nil, "", err
	}
	p := &path{name: name, frontend: c.Cmd,
		curlArgs: []string{"--noproxy", "*", "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", host, c.HTTPS)},
		url:      fmt.Sprintf("https://%s:%d/big.bin", host, c.HTTPS),
		client:   &http.Client{Timeout: 5 * time.Second, Transport: c.Transport(&tls.Config{RootCAs: roots, ServerName: host})},
	}
	p.startKite = func(attempt int) (*exec.Cmd, error) {
		return b.kite(kiteName(name, attempt), c.HTTPS, host, fsPort, token)
	}
	if p.kite, err = p.startKite(0); err != nil {
		return nil, nil, "", err
	}
	return p, c, token, nil
}

// pagekiteFrontend starts pagekite --isfrontend for host with secret, and
// a kite for it.
func (b *bench) pagekiteFrontend(name, host string, fsPort int, secret string, roots *x509.CertPool, extra ...string) (*path, error) {
	fePort, err := cloudtest.FreeTCPPort()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--clean", "--logfile=stdio", "--isfrontend", "--host=127.0.0.1",
		fmt.Sprintf("--ports=%d", fePort), "--protos=https",
		fmt.Sprintf("--domain=https:%s:%s", host, secret)}, extra...)
	fe, err := b.Start(name+"-frontend", []string{"HOME=" + b.Dir}, *pagekiteBin, args...)
	if err != nil {
		return nil, err
	}
	// Debian's pagekite (1.5.2.201011) cannot read the SNI of a
	// ClientHello under Python 3 (struct.unpack on a str; fixed upstream
	// after that release), so its frontend resets a TLS connection made
	// straight to it. Its HTTP CONNECT to port 443 names the kite instead
	// and skips that parser: curl goes through it as an HTTPS proxy, one
	// extra round trip before the same TLS download.
	proxy := fmt.Sprintf("http://127.0.0.1:%d", fePort)
	proxyURL, _ := url.Parse(proxy)
	p := &path{name: name, frontend: fe,
		curlArgs: []string{"--proxy", proxy, "--proxytunnel"},
		url:      fmt.Sprintf("https://%s/big.bin", host),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: roots},
		}},
	}
	if err := waitPort(fePort); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p.startKite = func(attempt int) (*exec.Cmd, error) {
		return b.kite(kiteName(name, attempt), fePort, host, fsPort, secret)
	}
	if p.kite, err = p.startKite(0); err != nil {
		return nil, err
	}
	return p, nil
}

// fileServer serves a file of SIZE bytes (sparse: zeros that cost no
// disk) at /big.bin over TLS with the gateway's certificate, and returns
// its port.
func (b *bench) fileServer(cert tls.Certificate) (int, error) {
	www := filepath.Join(b.Dir, "www")
	if err := os.Mkdir(www, 0o700); err != nil {
		return 0, err
	}
	f, err := os.Create(filepath.Join(www, "big.bin"))
	if err != nil {
		return 0, err
	}
	err = errors.Join(f.Truncate(*size), f.Close())
	if err != nil {
		return 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{
		Handler:   http.FileServer(http.Dir(www)),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	b.Close(srv)
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// kite runs the kite as a WebThings gateway does, with the frontend given
// as an address (so the kite needs no DNS), and waits until it says it is
// connected.
func (b *bench) kite(name string, frontendPort int, host string, backendPort int, secret string) (*exec.Cmd, error) {
	cmd, err := b.Start(name, []string{"HOME=" + b.Dir}, *pagekiteBin, "--clean", "--logfile=stdio",
		fmt.Sprintf("--frontend=127.0.0.1:%d", frontendPort),
		fmt.Sprintf("--service_on=https:%s:localhost:%d:%s", host, backendPort, secret))
	if err != nil {
		return nil, err
	}
	logFile := filepath.Join(b.Dir, name+".log")
	err = cloudtest.WaitFor(name+" to connect", 60*time.Second, 200*time.Millisecond, func() bool {
		out, _ := os.ReadFile(logFile)
		return strings.Contains(string(out), "connect=")
	})
	return cmd, err
}

func waitPort(port int) error {
	return cloudtest.WaitFor(fmt.Sprintf("port %d", port), 30*time.Second, 100*time.Millisecond, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kiteName names the log of a path's kite (its attempt-th restart).
func kiteName(path string, attempt int) string {
	if attempt == 0 {
		return "kite-" + path
	}
	return fmt.Sprintf("kite-%s.%d", path, attempt)
}

// ready waits until p serves; a kite that is not back within 30 s is
// started again, once.
func (p *path) ready() error {
	if waitPath(p, 30*time.Second) == nil {
		return nil
	}
	procs.Stop(p.kite)
	p.restarts++
	var err error
	if p.kite, err = p.startKite(p.restarts); err != nil {
		return err
	}
	return waitPath(p, 60*time.Second)
}

// waitPath waits until a small request through p gets the file server's
// answer (the kite is registered and serving).
func waitPath(p *path, timeout time.Duration) error {
	defer p.client.CloseIdleConnections()
	var last error
	err := cloudtest.WaitFor(p.name, timeout, 300*time.Millisecond, func() bool {
		resp, err := p.client.Head(p.url)
		if err != nil {
			last = err
			return false
		}
		resp.Body.Close()
		last = fmt.Errorf("status %d", resp.StatusCode)
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return fmt.Errorf("%s not ready: %w (%v)", p.name, err, last)
	}
	return nil
}

// reconnects counts the kites' connections after the first of each, from
// the "connect=" lines of their logs.
func (p *path) reconnects(dir string) int {
	n := 0
	for i := range p.restarts + 1 {
		out, _ := os.ReadFile(filepath.Join(dir, kiteName(p.name, i)+".log"))
		n += max(0, strings.Count(string(out), "; connect=")-1)
	}
	return n
}

type sample struct {
	speed          float64 // bytes/s
	secs           float64 // wall time of the download
	feCPU, kiteCPU float64 // CPU seconds spent during it
}

// throughput downloads SIZE bytes through each path in turn, ROUNDS
// times, the paths alternating within each round.
func (b *bench) throughput(paths []*path, certFile string, c *benchcloud.Cloud) error {
	res := make([][]sample, len(paths))
	for r := range *rounds {
		if err := b.limit.Check(); err != nil {
			return err
		}
		fmt.Printf("  round %d:", r+1)
		for i, p := range paths {
			stop := func() {}
			if r == 0 && i == 0 {
				stop = profile(c)
			}
			// Debian's frontend drops a kite's tunnel when it answers the
			// kite's PING (a TypeError in its SendPong under Python 3);
			// the kite reconnects, or at times only probes: wait until
			// it is back, outside the timed download.
			if err := p.ready(); err != nil {
				return err
			}
			fe0, k0 := procs.CPUSeconds(p.frontend.Process.Pid), procs.CPUSeconds(p.kite.Process.Pid)
			s, err := curl(b.ctx, certFile, p)
			s.feCPU = procs.CPUSeconds(p.frontend.Process.Pid) - fe0
			s.kiteCPU = procs.CPUSeconds(p.kite.Process.Pid) - k0
			stop()
			if err != nil {
				return fmt.Errorf("%s download: %w", p.name, err)
			}
			res[i] = append(res[i], s)
			fmt.Printf(" %s %s (frontend %.0f%%, kite %.0f%% of a core);", p.name, mbs(s.speed), 100*s.feCPU/s.secs, 100*s.kiteCPU/s.secs)
		}
		fmt.Println()
	}
	for _, p := range paths {
		if n := p.reconnects(b.Dir); n > 0 || p.restarts > 0 {
			fmt.Printf("  %s: the kite reconnected %d times, and was started again %d times, between downloads\n", p.name, n, p.restarts)
		}
	}
	perGiB := float64(1<<30) / float64(*size)
	fmt.Printf("\nMedians of %d interleaved rounds (CPU: user+system from /proc, per GiB downloaded; busy: CPU over the download's wall time):\n", *rounds)
	fmt.Printf("  %-18s %9s %18s %15s %14s %11s\n", "frontend", "MB/s", "frontend CPU s/GiB", "frontend busy", "kite CPU s/GiB", "kite busy")
	for i, p := range paths {
		m := func(f func(sample) float64) float64 { return median(res[i], f) }
		fmt.Printf("  %-18s %9.1f %18.2f %14.0f%% %14.2f %10.0f%%\n", p.name, m(func(s sample) float64 { return s.speed })/1e6,
			m(func(s sample) float64 { return s.feCPU })*perGiB, 100*m(func(s sample) float64 { return s.feCPU / s.secs }),
			m(func(s sample) float64 { return s.kiteCPU })*perGiB, 100*m(func(s sample) float64 { return s.kiteCPU / s.secs }))
	}
	id := func(v float64) float64 { return v }
	// Per-round ratios: each round's downloads ran back to back, under
	// about the same load from the machine's other users.
	for k := 1; k < len(paths); k++ {
		var speed, feCPU, kiteCPU []float64
		for r := range res[0] {
			a, t := res[0][r], res[k][r]
			speed = append(speed, a.speed/t.speed)
			feCPU = append(feCPU, a.feCPU/t.feCPU)
			kiteCPU = append(kiteCPU, a.kiteCPU/t.kiteCPU)
		}
		fmt.Printf("\ngatehouse / %s, median of the per-round ratios (range):\n", paths[k].name)
		target := ""
		if paths[k].name == "pagekite" {
			target = "   target >= 3x"
		}
		fmt.Printf("  throughput           %6.2fx (%.2f-%.2f)%s\n", median(speed, id), slices.Min(speed), slices.Max(speed), target)
		fmt.Printf("  frontend CPU per GiB %6.2fx (%.2f-%.2f)\n", median(feCPU, id), slices.Min(feCPU), slices.Max(feCPU))
		fmt.Printf("  kite CPU per GiB     %6.2fx (%.2f-%.2f)\n", median(kiteCPU, id), slices.Min(kiteCPU), slices.Max(kiteCPU))
	}
	return nil
}

// curl downloads p's URL and checks the size.
func curl(ctx context.Context, certFile string, p *path) (sample, error) {
	args := append([]string{"-sS", "--max-time", strconv.Itoa(int(dlTimeout.Seconds())), "--cacert", certFile,
		"-o", "/dev/null", "-w", "%{speed_download} %{size_download} %{time_total}"}, p.curlArgs...)
	cmd := exec.CommandContext(ctx, "curl", append(args, p.url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return sample{}, fmt.Errorf("curl: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	f := strings.Fields(string(out))
	if len(f) != 3 {
		return sample{}, fmt.Errorf("curl printed %q", out)
	}
	if got, _ := strconv.ParseInt(f[1], 10, 64); got != *size {
		return sample{}, fmt.Errorf("curl got %d bytes, want %d", got, *size)
	}
	var s sample
	s.speed, _ = strconv.ParseFloat(f[0], 64)
	s.secs, _ = strconv.ParseFloat(f[2], 64)
	return s, nil
}

// profile starts a CPU profile of the cloud (its admin endpoint) into
// -profile/cloud.pprof; stop waits for it.
func profile(c *benchcloud.Cloud) (stop func()) {
	if *profileDir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*profileSecs+30)*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
			fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", c.Admin, *profileSecs), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Printf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(*profileDir, "cloud.pprof"))
		if err != nil {
			log.Printf("profile: %v", err)
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

// median is the median of f over v.
func median[T any](v []T, f func(T) float64) float64 {
	s := make([]float64, len(v))
	for i := range v {
		s[i] = f(v[i])
	}
	slices.Sort(s)
	return s[len(s)/2]
}

func pagekiteVersion() string {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Version}", "pagekite").Output()
	if len(out) == 0 {
		return "version unknown"
	}
	return "pagekite " + string(out)
}

func mbs(bps float64) string { return fmt.Sprintf("%.1f MB/s", bps/1e6) }

func human(b int64) string {
	if b >= 1<<20 {
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}
