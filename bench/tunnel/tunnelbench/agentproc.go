package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	_ "net/http/pprof" // the agent process's profile, on its loopback debug port
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// The agent runs in a process of its own (this program, started again with
// -agent), so that its CPU time is measured apart from the client's and
// the servers'. Its two modes are the gateway agent's serving paths:
// passthrough relays the stream to the gateway's TLS server with
// relay.Conns; terminate ends TLS on the stream and proxies each request to
// the app over HTTP with httputil.ReverseProxy.
var (
	agentMode     = flag.String("agent", "", "internal: run as an agent process in this mode (passthrough, terminate)")
	agentURL      = flag.String("agent-url", "", "internal")
	agentName     = flag.String("agent-name", "", "internal")
	agentUpstream = flag.String("agent-upstream", "", "internal")
	agentCloud    = flag.String("agent-cloud", "", "internal: host:port of the cloud")
	agentCA       = flag.String("agent-ca", "", "internal: the cloud's root certificate")
	agentCert     = flag.String("agent-cert", "", "internal")
	agentKey      = flag.String("agent-key", "", "internal")
	agentDebug    = flag.String("agent-debug", "", "internal: loopback address for net/http/pprof")
)

type agentProc struct {
	cmd   *exec.Cmd
	debug string
}

func (b *bench) startAgentProc(c *cloud, name, token, mode, upstream, certFile, keyFile string) (*agentProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := cloudtest.FreeTCPPort()
	if err != nil {
		return nil, err
	}
	debug := fmt.Sprintf("127.0.0.1:%d", port)
	cmd, err := b.Start("agent-"+name, tunnelEnv("TUNNELBENCH_TOKEN="+token), self,
		"-agent", mode, "-agent-url", fmt.Sprintf("wss://api.box.test:%d/v1/tunnel", c.https),
		"-agent-name", name, "-agent-upstream", upstream,
		"-agent-cloud", fmt.Sprintf("127.0.0.1:%d", c.https), "-agent-ca", cloudtest.LocalCARoot(c.dir),
		"-agent-cert", certFile, "-agent-key", keyFile, "-agent-debug", debug)
	if err != nil {
		return nil, err
	}
	return &agentProc{cmd: cmd, debug: debug}, nil
}

// runAgent is the agent process's main.
func runAgent() error {
	roots := x509.NewCertPool()
	pemBytes, err := os.ReadFile(*agentCA)
	if err != nil {
		return err
	}
	roots.AppendCertsFromPEM(pemBytes)
	go func() { _ = http.ListenAndServe(*agentDebug, nil) }()

	var handler func(*tunnel.Stream)
	switch *agentMode {
	case "passthrough":
		handler = relayTo(*agentUpstream)
	case "terminate":
		cert, err := tls.LoadX509KeyPair(*agentCert, *agentKey)
		if err != nil {
			return err
		}
		h, stop := terminate(cert, &url.URL{Scheme: "http", Host: *agentUpstream})
		defer stop()
		handler = h
	default:
		return fmt.Errorf("unknown agent mode %q", *agentMode)
	}
	cl := &client.Client{
		URL:        *agentURL,
		Name:       *agentName,
		Token:      os.Getenv("TUNNELBENCH_TOKEN"),
		Handler:    handler,
		HTTPClient: &http.Client{Transport: dialTo(*agentCloud, &tls.Config{RootCAs: roots})},
		Config:     tunnel.Config{AcceptBacklog: 1024},
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	err = cl.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// terminate serves each stream as the gateway agent's proxy mode does: an
// http.Server with the gateway's certificate, on a listener fed with the
// accepted streams, proxying to upstream.
func terminate(cert tls.Certificate, upstream *url.URL) (func(*tunnel.Stream), func()) {
	ln := &streamListener{conns: make(chan net.Conn), done: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, ForceAttemptHTTP2: false}
	srv := &http.Server{
		Handler:   rp,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	h := func(st *tunnel.Stream) {
		if err := st.Ack(true, ""); err != nil {
			return
		}
		c := &doneConn{Conn: st, done: make(chan struct{})}
		select {
		case ln.conns <- c:
		case <-ln.done:
			_ = st.Close()
			return
		}
		<-c.done
	}
	return h, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}

type streamListener struct {
	conns chan net.Conn
	done  chan struct{}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

func (l *streamListener) Addr() net.Addr { return tunnel.Addr("tunnel") }

// doneConn tells the stream's handler when the HTTP server is done with it.
type doneConn struct {
	net.Conn
	done chan struct{}
	once bool
}

func (c *doneConn) Close() error {
	err := c.Conn.Close()
	if !c.once {
		c.once = true
		close(c.done)
	}
	return err
}

// profile writes CPU profiles of the cloud and of the passthrough agent
// process during a tunnel download into the folder TUNNELBENCH_PROFILE
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
		resp, err := http.Get(u)
		if err != nil {
			log.Printf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(out, file))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}
	go get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%s", c.admin, secs), "cloud.pprof")
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
			resp, err := http.Get(u)
			if err != nil {
				log.Printf("trace: %v", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(out, file))
			if err != nil {
				return
			}
			defer f.Close()
			_, _ = io.Copy(f, resp.Body)
		}
		// An execution trace, then a CPU profile, of each process.
		for _, kind := range []string{"trace", "profile"} {
			ext := map[string]string{"trace": ".trace", "profile": ".pprof"}[kind]
			go get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s?seconds=%s", c.admin, kind, secs), "cloud-"+mode.short+ext)
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
