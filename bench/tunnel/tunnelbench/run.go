package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/bench/internal/procs"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// path is one way from the client to the gateway's server.
type path struct {
	name  string
	addr  string      // host:port the client connects to
	host  string      // the TLS server name and Host
	procs []*exec.Cmd // the tunnel's processes, whose CPU time counts
}

func (p *path) cpu() float64 {
	var t float64
	for _, c := range p.procs {
		t += procs.CPUSeconds(c.Process.Pid)
	}
	return t
}

func (p *path) counters() procs.Counters {
	var c procs.Counters
	for _, cmd := range p.procs {
		c = c.Add(procs.ReadCounters(cmd.Process.Pid))
	}
	return c
}

func (b *bench) run() error {
	gc, err := gatewayCert(b.Dir)
	if err != nil {
		return err
	}
	cert, pool := gc.TLS(), gc.Pool()
	certFile, keyFile := filepath.Join(b.Dir, "gateway.pem"), filepath.Join(b.Dir, "gateway.key")
	if err := errors.Join(gc.WriteCert(certFile), gc.WriteKey(keyFile)); err != nil {
		return err
	}
	gw, err := startGatewayServer(cert)
	if err != nil {
		return err
	}
	defer gw.Close()
	app, err := startAppServer()
	if err != nil {
		return err
	}
	defer app.Close()
	gwAddr := gw.Addr().String()

	c, err := b.startCloud("cloud")
	if err != nil {
		return err
	}
	cloudAddr := fmt.Sprintf("127.0.0.1:%d", c.HTTPS)
	paths := []*path{{name: "direct", addr: gwAddr, host: "bench." + zone}}
	var agents []*agentProc
	for _, a := range []struct{ name, mode, upstream, label string }{
		{"bench", "passthrough", gwAddr, "gatehouse passthrough"},
		{"term", "terminate", app.Addr().String(), "gatehouse terminating"},
	} {
		token, err := c.Subscribe(a.name)
		if err != nil {
			return err
		}
		ap, err := b.startAgentProc(c, a.name, token, a.mode, a.upstream, certFile, keyFile)
		if err != nil {
			return err
		}
		agents = append(agents, ap)
		paths = append(paths, &path{name: a.label, addr: cloudAddr, host: a.name + "." + zone, procs: []*exec.Cmd{c.Cmd, ap.cmd}})
	}
	if *floorBin != "" {
		p, err := b.startFloor(gwAddr)
		if err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		paths = append(paths, p)
	}
	if *frpDir != "" { // last: the ratios look for frp there
		p, err := b.startFrp(gwAddr)
		if err != nil {
			return fmt.Errorf("frp: %w", err)
		}
		paths = append(paths, p)
	}
	for _, p := range paths {
		if err := waitPath(pool, p); err != nil {
			return err
		}
	}
	fmt.Printf("Gatehouse tunnel benchmark (loopback, %d cores shared by client, cloud, agent and server; load average %s)\n\n", numCPU(), loadAvg())

	if err := b.throughput(paths, certFile, c, agents); err != nil {
		return err
	}
	if err := b.limit.Check(); err != nil {
		return err
	}
	if err := latencyDetail(pool, paths, c, agents[0]); err != nil {
		return err
	}
	if err := latency(pool, paths); err != nil {
		return err
	}
	if err := b.limit.Check(); err != nil {
		return err
	}
	if err := concurrent(pool, paths); err != nil {
		return err
	}
	if *streams == 0 {
		return nil
	}
	if err := b.limit.Check(); err != nil {
		return err
	}
	return b.memory(cert)
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// waitPath waits until a small request through p succeeds.
func waitPath(pool *x509.CertPool, p *path) error {
	cl := &http.Client{Timeout: 3 * time.Second, Transport: dialTo(p.addr, &tls.Config{RootCAs: pool, ServerName: p.host})}
	defer cl.CloseIdleConnections()
	var last error
	err := cloudtest.WaitFor(p.name, 60*time.Second, 200*time.Millisecond, func() bool {
		resp, err := cl.Get("https://" + p.host + "/small")
		if err != nil {
			last = err
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		last = fmt.Errorf("status %d", resp.StatusCode)
		return resp.StatusCode == 200
	})
	if err != nil {
		return fmt.Errorf("%s not ready: %w (%v)", p.name, err, last)
	}
	return nil
}

// throughput downloads SIZE bytes with curl through each path in turn,
// ROUNDS times, alternating the paths within each round.
func (b *bench) throughput(paths []*path, certFile string, c *cloud, agents []*agentProc) error {
	// The profiled download: the passthrough agent's, or the terminating
	// one's when TUNNELBENCH_PROFILE_AGENT=terminate.
	profiled := 0
	if os.Getenv("TUNNELBENCH_PROFILE_AGENT") == "terminate" {
		profiled = 1
	}
	if *rounds == 0 {
		return nil // ROUNDS=0: the latency part alone
	}
	speeds := make([][]float64, len(paths))
	cpus := make([][]float64, len(paths))
	counts := make([]procs.Counters, len(paths)) // summed over the rounds
	url := fmt.Sprintf("/big?n=%d", *size)
	for r := range *rounds {
		if err := b.limit.Check(); err != nil {
			return err
		}
		fmt.Printf("  round %d:", r+1)
		for i, p := range paths {
			stop := func() {}
			if r == 0 && i == profiled+1 {
				stop = profile(c, agents[profiled])
			}
			cpu0, n0 := p.cpu(), p.counters()
			s, err := curlSpeed(certFile, p.addr, p.host, url)
			cpu := p.cpu() - cpu0
			counts[i] = counts[i].Add(p.counters().Sub(n0))
			stop()
			if err != nil {
				return fmt.Errorf("%s download: %w", p.name, err)
			}
			speeds[i], cpus[i] = append(speeds[i], s), append(cpus[i], cpu)
			fmt.Printf(" %s %s;", p.name, mbs(s))
		}
		fmt.Println()
	}
	frp := len(paths) - 1
	if paths[frp].name != "frp" {
		frp = -1
	}
	proto := "HTTP/2"
	if *http1 {
		proto = "HTTP/1.1"
	}
	fmt.Printf("Throughput, one HTTPS download of %s with curl (%s), %d interleaved rounds (median; CPU is the tunnel's processes, user+system):\n", human(*size), proto, *rounds)
	fmt.Printf("  %-24s %10s %9s %14s %10s %10s\n", "path", "MB/s", "of direct", "CPU s per GiB", "MB/s÷frp", "CPU÷frp")
	for i, p := range paths {
		sp := median(speeds[i])
		cpuGiB := median(cpus[i]) * float64(1<<30) / float64(*size)
		line := fmt.Sprintf("  %-24s %10.0f %8.0f%%", p.name, sp/1e6, 100*sp/median(speeds[0]))
		if i == 0 {
			fmt.Println(line)
			continue
		}
		line += fmt.Sprintf(" %14.2f", cpuGiB)
		if frp > 0 && i != frp {
			line += fmt.Sprintf(" %9.2fx %9.2fx", medianRatio(speeds[i], speeds[frp]), medianRatio(cpus[i], cpus[frp]))
		}
		fmt.Println(line)
	}
	if frp > 0 {
		fmt.Println("  (targets: throughput >= 1.5x frp, CPU per GiB <= 0.6x frp)")
	}
	// The floor is about the least any encrypted tunnel spends here: a
	// target beyond it cannot be met, and each path's distance from it is
	// what there is left to gain.
	if fl := pathIndex(paths, "floor"); fl > 0 {
		if frp > 0 {
			fmt.Printf("  floor MB/s÷frp %.2fx   (throughput >= 1.5x frp can only be met if this is above 1.5x)\n", medianRatio(speeds[fl], speeds[frp]))
			fmt.Printf("  floor CPU÷frp  %.2fx   (CPU per GiB <= 0.6x frp can only be met if this is below 0.6x)\n", medianRatio(cpus[fl], cpus[frp]))
		}
		for i, p := range paths {
			if strings.HasPrefix(p.name, "gatehouse") {
				fmt.Printf("  %-24s CPU÷floor %.2fx   MB/s÷floor %.2fx\n", p.name, medianRatio(cpus[i], cpus[fl]), medianRatio(speeds[i], speeds[fl]))
			}
		}
	}
	// What the CPU went on, from the kernel's counters of the tunnel's
	// processes: system calls and context switches per MiB carried.
	mib := float64(*size) * float64(*rounds) / (1 << 20)
	fmt.Printf("  %-24s %14s %14s %16s\n", "per MiB", "read calls", "write calls", "context switches")
	for i, p := range paths[1:] {
		n := counts[i+1]
		fmt.Printf("  %-24s %14.1f %14.1f %16.1f\n", p.name, n.ReadCalls/mib, n.WriteCalls/mib, n.Switches/mib)
	}
	fmt.Println()
	return nil
}

// medianRatio is the median of the per-round ratios a[r]/b[r]: each
// round's paths ran back to back, under about the same load.
func medianRatio(a, b []float64) float64 {
	var rs []float64
	for r := range a {
		rs = append(rs, a[r]/b[r])
	}
	return median(rs)
}

// pathIndex is the index of the path named name, -1 when there is none.
func pathIndex(paths []*path, name string) int {
	return slices.IndexFunc(paths, func(p *path) bool { return p.name == name })
}

// concurrent runs CONCURRENT downloads of CONCURRENT_SIZE bytes at once,
// each on a new connection, through each path, and times them.
func concurrent(pool *x509.CertPool, paths []*path) error {
	if *concN == 0 {
		return nil
	}
	fmt.Printf("%d concurrent downloads of %s, each on a new connection (wall time; interleaved, best of %d):\n", *concN, human(*concSize), *concRounds)
	best := make([]time.Duration, len(paths))
	errs := make([]int, len(paths))
	for range *concRounds {
		for i, p := range paths {
			d, nerr := concurrentOnce(pool, p)
			errs[i] += nerr
			if best[i] == 0 || d < best[i] {
				best[i] = d
			}
		}
	}
	for i, p := range paths {
		fmt.Printf("  %-24s %8.2f s   %d errors", p.name, best[i].Seconds(), errs[i])
		if f := len(paths) - 1; paths[f].name == "frp" && i > 0 && i != f {
			fmt.Printf("   %.2fx frp's time", best[i].Seconds()/best[f].Seconds())
		}
		fmt.Println()
	}
	fmt.Println()
	return nil
}

func concurrentOnce(pool *x509.CertPool, p *path) (time.Duration, int) {
	tr := dialTo(p.addr, &tls.Config{RootCAs: pool, ServerName: p.host})
	tr.DisableKeepAlives = true
	tr.MaxIdleConnsPerHost = 0
	cl := &http.Client{Transport: tr, Timeout: 120 * time.Second}
	var wg sync.WaitGroup
	var mu sync.Mutex
	nerr := 0
	start := time.Now()
	for range *concN {
		wg.Go(func() {
			resp, err := cl.Get(fmt.Sprintf("https://%s/big?n=%d", p.host, *concSize))
			var n int64
			if err == nil {
				n, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil || n != *concSize {
				mu.Lock()
				nerr++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return time.Since(start), nerr
}
