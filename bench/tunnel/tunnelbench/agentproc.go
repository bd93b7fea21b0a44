package main

import (
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
)

// The agent runs in a process of its own, so that its CPU time is
// measured apart from the client's and the servers': -agent names the
// binary, gateway-agent/internal/benchagent, a tunnel client whose streams
// the gateway agent's own proxy package serves (the real code of both
// modes: passthrough relays each stream to the gateway's TLS server;
// terminate ends TLS on it and proxies each request to the app over HTTP).
var agentBin = flag.String("agent", "", "the agent process's binary, gateway-agent/internal/benchagent (required)")

type agentProc struct {
	cmd   *exec.Cmd
	debug string
}

func (b *bench) startAgentProc(c *cloud, name, token, mode, upstream, certFile, keyFile string) (*agentProc, error) {
	port, err := cloudtest.FreeTCPPort()
	if err != nil {
		return nil, err
	}
	debug := fmt.Sprintf("127.0.0.1:%d", port)
	cmd, err := b.Start("agent-"+name, tunnelEnv("TUNNELBENCH_TOKEN="+token), *agentBin,
		"-mode", mode, "-url", fmt.Sprintf("wss://api.box.test:%d/v1/tunnel", c.HTTPS),
		"-name", name, "-upstream", upstream,
		"-cloud", fmt.Sprintf("127.0.0.1:%d", c.HTTPS), "-ca", cloudtest.LocalCARoot(c.Dir),
		"-cert", certFile, "-key", keyFile, "-debug", debug)
	if err != nil {
		return nil, err
	}
	return &agentProc{cmd: cmd, debug: debug}, nil
}

// profile writes CPU profiles of the cloud and of an agent process (the
// passthrough one, or per TUNNELBENCH_PROFILE_AGENT) during its download into the folder TUNNELBENCH_PROFILE
// names, for finding where the time goes.
func profile(c *cloud, a *agentProc) (stop func()) {
	out := os.Getenv("TUNNELBENCH_PROFILE")
	if out == "" {
		return func() {}
	}
	secs := os.Getenv("TUNNELBENCH_PROFILE_SECONDS")
	if secs == "" {
		secs = "2"
	}
	done := make(chan struct{}, 2)
	get := func(u, file string) {
		defer func() { done <- struct{}{} }()
		saveURL(u, filepath.Join(out, file))
	}
	go get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%s", c.Admin, secs), "cloud.pprof")
	go get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%s", a.debug, secs), "agent.pprof")
	return func() { <-done; <-done }
}

// latencyDetail runs when LATENCY_DETAIL or TUNNELBENCH_TRACE is set,
// before the interleaved latency loops: each path with processes of its
// own (the tunnels) serves N small requests alone, on a kept connection
// and on new connections, and the kernel's counters of its processes give
// what one request costs them: system calls, context switches, CPU. Then,
// with TUNNELBENCH_TRACE=DIR, Go execution traces of the cloud and of the
// passthrough agent during such a loop go to DIR ({cloud,agent}-kept.trace,
// -new.trace; TUNNELBENCH_TRACE_SECONDS each, 1): every goroutine wakeup
// and system call of a request, for go tool trace; then CPU profiles
// during another such loop (.pprof).
func latencyDetail(pool *x509.CertPool, paths []*path, c *cloud, a *agentProc) error {
	out := os.Getenv("TUNNELBENCH_TRACE")
	if out == "" && os.Getenv("LATENCY_DETAIL") == "" {
		return nil
	}
	fmt.Println("Per request, each path alone (its tunnel processes' counters):")
	fmt.Printf("  %-24s %-5s %8s %8s %8s %9s %9s\n", "path", "conn", "p50", "reads", "writes", "switches", "CPU µs")
	for _, mode := range latencyModes() {
		n := *latN
		if !mode.keepAlive {
			n = *setupN
		}
		for _, p := range paths {
			if len(p.procs) == 0 {
				continue
			}
			cl := latencyClient(pool, p, mode.keepAlive)
			for range 50 { // warm-up
				if _, err := timeGet(cl, p.host); err != nil {
					return err
				}
			}
			cpu0, c0 := p.cpu(), p.counters()
			ds := make([]time.Duration, 0, n)
			for range n {
				d, err := timeGet(cl, p.host)
				if err != nil {
					return err
				}
				ds = append(ds, d)
			}
			cpu, cn := p.cpu()-cpu0, p.counters().Sub(c0)
			cl.CloseIdleConnections()
			f := float64(n)
			fmt.Printf("  %-24s %-5s %8v %8.1f %8.1f %9.1f %9.1f\n", p.name, mode.short, us(percentile(ds, 50)),
				cn.ReadCalls/f, cn.WriteCalls/f, cn.Switches/f, cpu*1e6/f)
		}
	}
	fmt.Println()
	if out == "" {
		return nil
	}
	secs := os.Getenv("TUNNELBENCH_TRACE_SECONDS")
	if secs == "" {
		secs = "1"
	}
	p := paths[1]
	for _, mode := range latencyModes() {
		cl := latencyClient(pool, p, mode.keepAlive)
		for range 50 { // warm-up
			if _, err := timeGet(cl, p.host); err != nil {
				return err
			}
		}
		done := make(chan struct{}, 2)
		get := func(u, file string) {
			defer func() { done <- struct{}{} }()
			saveURL(u, filepath.Join(out, file))
		}
		// An execution trace, then a CPU profile, of each process.
		for _, kind := range []string{"trace", "profile"} {
			ext := map[string]string{"trace": ".trace", "profile": ".pprof"}[kind]
			go get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s?seconds=%s", c.Admin, kind, secs), "cloud-"+mode.short+ext)
			go get(fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%s", a.debug, kind, secs), "agent-"+mode.short+ext)
			time.Sleep(100 * time.Millisecond)
			var ds []time.Duration
			for len(done) == 0 { // until the first one is in
				d, err := timeGet(cl, p.host)
				if err != nil {
					return err
				}
				ds = append(ds, d)
			}
			<-done
			<-done
			fmt.Printf("%s of %s, %s connections: %d requests, p50 %v\n", kind, p.name, mode.short, len(ds), us(percentile(ds, 50)))
		}
		cl.CloseIdleConnections()
	}
	fmt.Println()
	return nil
}

// tunnelEnv is env for a tunnel process (cloud, agents, frps, frpc), with
// GOMAXPROCS from TUNNEL_GOMAXPROCS when set: how the Go scheduler's
// threads on a small machine weigh on latency, every tunnel alike.
func tunnelEnv(env ...string) []string {
	if n := os.Getenv("TUNNEL_GOMAXPROCS"); n != "" {
		env = append(env, "GOMAXPROCS="+n)
	}
	return env
}

// saveURL writes what a GET of u answers (a profile or a trace from a
// process's pprof endpoint) to file; a failure is logged, not fatal: the
// figures of the run do not depend on it.
func saveURL(u, file string) {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		log.Printf("saving %s: %v", u, err)
		return
	}
	resp, err := http.Get(u)
	if err != nil {
		log.Printf("fetching %s: %v", u, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		log.Printf("saving %s: %v", u, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		log.Printf("saving %s: %v", u, err)
	}
}
