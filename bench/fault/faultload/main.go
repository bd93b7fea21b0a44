// Command faultload is the load-and-fault test of the cloud: it starts the
// cloud (the Caddy binary given with -caddy) on SQLite in a temporary
// folder, registers -n gateways and opens one tunnel session for each with
// modules/tunnel/client (one client per gateway, in this process), records
// the cloud's RSS and open file descriptors, then kills the cloud with
// SIGKILL while a writer subscribes new gateways in a loop, restarts it on
// the same store and ports, and measures how long each client takes to
// reconnect (p50, p99, max), the RSS and descriptors once all are back, and
// whether every subscribe the cloud acknowledged before the kill is still
// there (each acknowledged token must still ping; lost must be 0).
// bench/fault/run.sh builds and runs it.
//
// Every loop is bounded in count and in time (-time-limit), and all
// traffic stays on 127.0.0.1.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gatehouse-project/gatehouse/bench/internal/benchcloud"
	"github.com/gatehouse-project/gatehouse/bench/internal/procs"
	"github.com/gatehouse-project/gatehouse/internal/testtools/cloudtest"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

var (
	caddyBin  = flag.String("caddy", "", "the cloud's Caddy binary (required)")
	n         = flag.Int("n", 1000, "gateways, each with its own tunnel client")
	writers   = flag.Int("writers", 4, "concurrent subscribe loops across the kill")
	before    = flag.Duration("write-before", 3*time.Second, "how long the writers run before the kill")
	down      = flag.Duration("down", 0, "how long the cloud stays dead before the restart")
	timeLimit = flag.Duration("time-limit", 10*time.Minute, "the whole run's bound")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("faultload: ")
	if *caddyBin == "" {
		log.Fatal("-caddy is required")
	}
	if *n < 1 || *writers < 1 {
		log.Fatal("-n and -writers must be at least 1")
	}
	procs.Main("faultload", func(g *procs.Group) error {
		r := &run{Group: g, deadline: time.Now().Add(*timeLimit)}
		return r.run()
	})
}

type run struct {
	*procs.Group
	deadline time.Time

	cmd          *exec.Cmd
	cfg          string
	admin, https int
	api          *http.Client
	tlsConfig    *tls.Config
}

var errTimeLimit = errors.New("time limit reached")

// waitUntil polls cond every interval until it holds or the run's
// deadline passes.
func (r *run) waitUntil(what string, interval time.Duration, cond func() bool) error {
	for !cond() {
		if time.Now().After(r.deadline) {
			return fmt.Errorf("waiting for %s: %w (%v)", what, errTimeLimit, *timeLimit)
		}
		time.Sleep(interval)
	}
	return nil
}

// startCloud starts (or restarts, on the same folder, store and ports)
// the cloud and waits until its API answers.
func (r *run) startCloud(name string) error {
	cmd, err := r.Start(name, cloudtest.CaddyEnv(r.Dir), *caddyBin, "run", "--config", r.cfg, "--adapter", "caddyfile")
	if err != nil {
		return err
	}
	r.cmd = cmd
	// Caddy makes its local CA on the first start; the restart finds it.
	return r.waitUntil("the cloud to answer", 50*time.Millisecond, func() bool {
		if r.api == nil {
			pemBytes, err := os.ReadFile(cloudtest.LocalCARoot(r.Dir))
			if err != nil {
				return false
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(pemBytes)
			r.tlsConfig = &tls.Config{RootCAs: roots}
			r.api = &http.Client{Timeout: 10 * time.Second, Transport: r.transport(64)}
		}
		resp, err := r.api.Get(fmt.Sprintf("https://api.box.test:%d/connectivity-check", r.https))
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// transport connects to the cloud's HTTPS port whatever the URL's host.
func (r *run) transport(idle int) *http.Transport {
	addr := fmt.Sprintf("127.0.0.1:%d", r.https)
	return &http.Transport{
		TLSClientConfig: r.tlsConfig,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: idle,
		ForceAttemptHTTP2:   false,
	}
}

// usage is the cloud's resident set and open descriptors, from /proc.
func (r *run) usage() (rss int64, fds int, err error) {
	pid := r.cmd.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			rss = kb * 1024
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rss, len(ents), err
}

// subscribe registers name; an empty token with a nil error is a refusal.
func (r *run) subscribe(ctx context.Context, c *http.Client, name string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("https://api.box.test:%d/subscribe?name=%s", r.https, url.QueryEscape(name)), nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sub struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&sub); err != nil {
		return "", fmt.Errorf("subscribe %s: %d: %w", name, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || sub.Token == "" {
		return "", fmt.Errorf("subscribe %s: status %d", name, resp.StatusCode)
	}
	return sub.Token, nil
}

// ping reports the status of /ping with token: 200 if the gateway is
// there, 404 if its token is unknown.
func (r *run) ping(token string) (int, error) {
	resp, err := r.api.Get(fmt.Sprintf("https://api.box.test:%d/ping?token=%s", r.https, url.QueryEscape(token)))
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (r *run) run() error {
	var ports [3]int
	for i := range ports {
		p, err := cloudtest.FreeTCPPort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	r.admin, r.https = ports[0], ports[2]
	r.cfg = filepath.Join(r.Dir, "Caddyfile")
	if err := os.WriteFile(r.cfg, benchcloud.Caddyfile(ports[0], ports[1], ports[2], r.Dir, ""), 0o600); err != nil {
		return err
	}
	t0 := time.Now()
	if err := r.startCloud("cloud"); err != nil {
		return err
	}
	fmt.Printf("cloud up in %v (SQLite in %s)\n", time.Since(t0).Round(time.Millisecond), r.Dir)

	// Register the gateways, a few at a time.
	t0 = time.Now()
	names := make([]string, *n)
	tokens := make([]string, *n)
	if err := r.parallel(8, *n, func(i int) error {
		names[i] = fmt.Sprintf("gw%d", i)
		var err error
		tokens[i], err = r.subscribe(context.Background(), r.api, names[i])
		return err
	}); err != nil {
		return err
	}
	fmt.Printf("registered %d gateways in %v\n", *n, time.Since(t0).Round(time.Millisecond))

	// One client per gateway, with the agent's default backoff (probing
	// while it waits, reconnecting within a random second once the cloud
	// answers again).
	t0 = time.Now()
	clients := make([]*client.Client, *n)
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	r.OnStop(func() { cancel(); running.Wait() })
	for i := range clients {
		clients[i] = &client.Client{
			URL:        fmt.Sprintf("wss://api.box.test:%d/v1/tunnel", r.https),
			Name:       names[i],
			Token:      tokens[i],
			Handler:    func(st *tunnel.Stream) { _ = st.Ack(false, "faultload: no service") },
			HTTPClient: &http.Client{Transport: r.transport(1)},
		}
		running.Add(1)
		go func(c *client.Client) { defer running.Done(); _ = c.Run(ctx) }(clients[i])
	}
	connected := func(after time.Time) func() bool {
		return func() bool {
			for _, c := range clients {
				if st := c.State(); !st.Connected || !st.Since.After(after) {
					return false
				}
			}
			return true
		}
	}
	if err := r.waitUntil("every client to connect", 50*time.Millisecond, connected(time.Time{})); err != nil {
		return err
	}
	fmt.Printf("%d sessions up in %v\n", *n, time.Since(t0).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // let the cloud settle before measuring
	rss0, fds0, err := r.usage()
	if err != nil {
		return err
	}

	// The writers: subscribe fresh names until told to stop, keeping every
	// token the cloud acknowledged. A request cut by the kill is not
	// acknowledged and is not counted.
	var (
		ackMu           sync.Mutex
		acked           []string
		ackedBeforeKill atomic.Int64
		failed          atomic.Int64
		seq             atomic.Int64
		killed          atomic.Bool
	)
	wctx, stopWriters := context.WithCancel(context.Background())
	var writing sync.WaitGroup
	for w := range *writers {
		writing.Add(1)
		go func() {
			defer writing.Done()
			c := &http.Client{Timeout: 5 * time.Second, Transport: r.transport(1)}
			defer c.CloseIdleConnections()
			for wctx.Err() == nil && time.Now().Before(r.deadline) {
				name := fmt.Sprintf("w%dx%d", w, seq.Add(1))
				tok, err := r.subscribe(wctx, c, name)
				if err != nil {
					failed.Add(1)
					// The cloud is down: do not spin.
					time.Sleep(20 * time.Millisecond)
					continue
				}
				ackMu.Lock()
				acked = append(acked, tok)
				ackMu.Unlock()
				if !killed.Load() {
					ackedBeforeKill.Add(1)
				}
			}
		}()
	}
	r.OnStop(func() { stopWriters(); writing.Wait() })
	time.Sleep(*before)

	// kill -9, then the restart on the same store.
	old := r.cmd
	if err := old.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	killed.Store(true)
	_ = old.Wait()
	kill := time.Now()
	time.Sleep(*down)
	restart := time.Now()
	if err := r.startCloud("cloud-restarted"); err != nil {
		return err
	}
	ready := time.Now()
	if err := r.waitUntil("every client to reconnect", 20*time.Millisecond, connected(kill)); err != nil {
		down := 0
		for _, c := range clients {
			if !c.State().Connected {
				down++
			}
		}
		return fmt.Errorf("%w (%d of %d not connected)", err, down, *n)
	}
	all := time.Now()
	times := make([]time.Duration, len(clients))
	for i, c := range clients {
		times[i] = c.State().Since.Sub(restart)
	}
	slices.Sort(times)
	// Keep writing a little after the restart, then stop.
	time.Sleep(time.Second)
	stopWriters()
	writing.Wait()
	time.Sleep(2 * time.Second)
	rss1, fds1, err := r.usage()
	if err != nil {
		return err
	}

	// Every acknowledged subscribe must still be there. A token never
	// issued must get 404, or the check below could not see a loss.
	if code, err := r.ping("faultload-never-issued-token"); err != nil || code != http.StatusNotFound {
		return fmt.Errorf("ping with an unknown token: status %d, %v; want 404", code, err)
	}
	var lost, unsure atomic.Int64
	if err := r.parallel(8, len(acked), func(i int) error {
		for range 3 {
			code, err := r.ping(acked[i])
			switch {
			case err == nil && code == http.StatusOK:
				return nil
			case err == nil && code == http.StatusNotFound:
				lost.Add(1)
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		unsure.Add(1)
		return nil
	}); err != nil {
		return err
	}

	fmt.Printf("\nLoad and fault, %d gateways, one tunnel client each (default backoff), cloud on SQLite:\n", *n)
	fmt.Printf("  cloud before the kill: RSS %s, %d open fds\n", human(rss0), fds0)
	fmt.Printf("  cloud killed (SIGKILL), restarted after %v; its API answered %v after the restart\n",
		restart.Sub(kill).Round(time.Millisecond), ready.Sub(restart).Round(time.Millisecond))
	fmt.Printf("  reconnect time from the restart: p50 %v, p99 %v, max %v (all %d back %v after the restart)\n",
		percentile(times, 50), percentile(times, 99), times[len(times)-1].Round(time.Millisecond), *n, all.Sub(restart).Round(time.Millisecond))
	fmt.Printf("  cloud after all reconnected: RSS %s, %d open fds\n", human(rss1), fds1)
	fmt.Printf("  writes (%d writers, /subscribe): %d acknowledged (%d before the kill), %d failed or cut, %d lost, %d unverified\n",
		*writers, len(acked), ackedBeforeKill.Load(), failed.Load(), lost.Load(), unsure.Load())
	if lost.Load() != 0 || unsure.Load() != 0 {
		return fmt.Errorf("%d acknowledged writes lost, %d unverified", lost.Load(), unsure.Load())
	}
	return nil
}

// parallel runs f(0..count-1) on k goroutines and returns the first error.
func (r *run) parallel(k, count int, f func(int) error) error {
	var next, done atomic.Int64
	var first error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= count || time.Now().After(r.deadline) {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if first == nil && int(done.Load()) < count {
		return fmt.Errorf("%w (%v)", errTimeLimit, *timeLimit)
	}
	return first
}

func percentile(v []time.Duration, p int) time.Duration {
	i := (len(v)*p + 99) / 100
	return v[max(0, min(len(v)-1, i-1))].Round(time.Millisecond)
}

func human(b int64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
