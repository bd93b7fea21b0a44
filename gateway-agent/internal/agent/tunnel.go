package agent

import (
	"context"
	"errors"
	"hash/fnv"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// How the agent follows the cloud's nodes (GET /v1/nodes).
const (
	// defaultNodesRefresh is how often the node list is asked for while
	// all is well: nodes join and leave rarely.
	defaultNodesRefresh = 3 * time.Minute
	// nodesRetry is the first wait between two askings while a tunnel is
	// down: a dead node leaves the list within its lease (seconds). It
	// doubles while the tunnel stays down, up to the refresh period, so
	// that the agents of a node that is gone for long do not load the
	// API.
	nodesRetry = 5 * time.Second
	// nodesTimeout bounds one asking; the tunnels do not wait longer for
	// it at start.
	nodesTimeout = 10 * time.Second
	// replaceAfter is how many consecutive failures make a node's tunnel
	// give way to one toward a node not in use.
	replaceAfter = 3
	// watchInterval is how often the tunnels' states are looked at.
	watchInterval = 500 * time.Millisecond
)

// tunnelRun is one running tunnel client and how to stop it. node is ""
// for the tunnel dialed through DNS (one node, or a cloud that lists
// none); else the client dials addrs, the node's addresses, in turn.
type tunnelRun struct {
	node  string
	addrs []netip.Addr
	// dialed is the address the last connection went to.
	dialed    atomic.Pointer[netip.Addr]
	c         *client.Client
	transport *http.Transport
	cancel    context.CancelFunc
	done      chan struct{}
}

// addr is the node's address the tunnel uses: the one it reached last, or
// the first one before it reached any. Invalid for the DNS tunnel.
func (r *tunnelRun) addr() netip.Addr {
	if p := r.dialed.Load(); p != nil {
		return *p
	}
	if len(r.addrs) > 0 {
		return r.addrs[0]
	}
	return netip.Addr{}
}

func (r *tunnelRun) stop() {
	r.cancel()
	<-r.done
	r.transport.CloseIdleConnections()
}

// tunnelSet is the tunnels of one name and token: one through DNS, or, when
// the cloud lists several nodes, up to tunnel_connections to distinct
// nodes. Its manager goroutine owns the set of runs; the mutex only guards
// the list that Status and Open read.
type tunnelSet struct {
	name, token string
	cancel      context.CancelFunc
	done        chan struct{}

	mu   sync.Mutex
	runs []*tunnelRun
}

// snapshot returns the runs in order of start.
func (s *tunnelSet) snapshot() []*tunnelRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.runs)
}

// tunnelOpener opens forwarding streams on whichever tunnel is connected
// now: the set is replaced when the gateway changes name, and its tunnels
// come and go with the nodes.
type tunnelOpener struct{ a *Agent }

func (o tunnelOpener) Open(ctx context.Context, init tunnel.Initiator) (*tunnel.Stream, error) {
	o.a.mu.Lock()
	set := o.a.tuns
	o.a.mu.Unlock()
	if set == nil {
		return nil, client.ErrNotConnected
	}
	// Any node reaches any gateway: the first tunnel that is up will do.
	// One that went down since its state was read answers
	// ErrNotConnected, and the next is tried.
	for _, run := range set.snapshot() {
		if !run.c.State().Connected {
			continue
		}
		st, err := run.c.Open(ctx, init)
		if errors.Is(err, client.ErrNotConnected) {
			continue
		}
		return st, err
	}
	return nil, client.ErrNotConnected
}

// handleStream serves a stream the cloud opened, on any of the tunnels: a
// forwarding from another gateway (destination set) goes to the
// allow-list, public ingress to the proxy.
func (a *Agent) handleStream(st *tunnel.Stream) {
	if forward.IsForwarding(st.Initiator()) {
		a.mu.Lock()
		ctx := a.runCtx
		a.mu.Unlock()
		a.target.Handle(ctx, st)
		return
	}
	a.proxy.HandleStream(st)
}

// ensureTunnel runs the tunnels for reg, replacing those of another name or
// token.
func (a *Agent) ensureTunnel(reg *state.Registration) {
	a.mu.Lock()
	if a.tuns != nil && a.tuns.name == reg.Name && a.tuns.token == reg.Token {
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	a.stopTunnel()
	ctx, cancel := context.WithCancel(context.Background())
	set := &tunnelSet{name: reg.Name, token: reg.Token, cancel: cancel, done: make(chan struct{})}
	a.mu.Lock()
	a.tuns = set
	a.mu.Unlock()
	go func() {
		defer close(set.done)
		a.manageTunnels(ctx, set)
	}()
	a.log.Info("tunnel starting", "name", reg.Name, "url", a.cfg.TunnelURL(), "connections", a.cfg.TunnelConnections)
}

// stopTunnel stops the running tunnels and waits for them.
func (a *Agent) stopTunnel() {
	a.mu.Lock()
	set := a.tuns
	a.tuns = nil
	a.mu.Unlock()
	if set == nil {
		return
	}
	set.cancel()
	<-set.done
}

// manageTunnels keeps set's tunnels where the node list says until ctx
// ends, then stops them. With tunnel_connections 1 it never asks for the
// nodes: one tunnel through DNS, as before there were several nodes.
func (a *Agent) manageTunnels(ctx context.Context, set *tunnelSet) {
	log := a.log.With("component", "tunnel")
	defer func() {
		for _, run := range set.snapshot() {
			run.stop()
		}
		set.mu.Lock()
		set.runs = nil
		set.mu.Unlock()
	}()
	want := a.cfg.TunnelConnections
	if want <= 1 {
		a.startRun(ctx, set, "", nil)
		<-ctx.Done()
		return
	}
	refresh := a.opts.NodesRefresh
	if refresh <= 0 {
		refresh = defaultNodesRefresh
	}
	retry := min(nodesRetry, refresh)
	wait := retry
	var nodes []cloudapi.Node
	var asked time.Time
	ask := func() {
		asked = time.Now()
		actx, cancel := context.WithTimeout(ctx, nodesTimeout)
		got, err := a.api.Nodes(actx, set.token)
		cancel()
		if err != nil {
			// Keep the last list: the tunnels that run stay.
			if ctx.Err() == nil {
				log.Warn("listing the cloud's nodes", "error", err)
			}
			return
		}
		if !slices.EqualFunc(got, nodes, sameNode) {
			log.Info("cloud nodes", "nodes", nodeNames(got))
		}
		nodes = got
	}
	ask()
	failedAt := map[string]time.Time{}
	a.placeTunnels(ctx, set, nodes, want, failedAt)
	periodic := time.NewTicker(refresh)
	defer periodic.Stop()
	watch := time.NewTicker(min(watchInterval, refresh))
	defer watch.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-periodic.C:
			ask()
		case <-watch.C:
			// A tunnel that is down may mean a node that died: its
			// lease ends within seconds and the list then says so.
			down := false
			for _, run := range set.snapshot() {
				if !run.c.State().Connected {
					down = true
				}
			}
			if !down {
				wait = retry
				continue
			}
			if time.Since(asked) >= wait {
				ask()
				wait = min(2*wait, refresh)
			}
		}
		a.placeTunnels(ctx, set, nodes, want, failedAt)
	}
}

// placeTunnels starts and stops set's tunnels so that they go to distinct
// listed nodes, up to want of them, or through DNS when fewer than two
// nodes are listed and no tunnel to a listed node runs. A tunnel to a node
// that left the list stops (unless the list is empty and the tunnel up:
// then it stops once it is down); one that failed replaceAfter times in a row
// gives way to a node not in use (it keeps retrying when there is none).
// A tunnel that works is touched only when its node leaves a non-empty
// list, or (the DNS tunnel) once several nodes are listed.
func (a *Agent) placeTunnels(ctx context.Context, set *tunnelSet, nodes []cloudapi.Node, want int, failedAt map[string]time.Time) {
	log := a.log.With("component", "tunnel", "gateway", set.name)
	listed := map[string]cloudapi.Node{}
	for _, n := range nodes {
		listed[n.Name] = n
	}
	var keep, drop []*tunnelRun
	used, usedAddr := inUse(set.snapshot())
	multi := len(nodes) >= 2
	for _, run := range set.snapshot() {
		st := run.c.State()
		n, ok := listed[run.node]
		switch {
		case run.node == "":
			// The DNS tunnel gives way to tunnels to the nodes once
			// there are several.
			if multi {
				drop = append(drop, run)
				continue
			}
		case len(nodes) == 0 && st.Connected:
			// An empty list says nothing of a node that works (a cloud
			// back to one node, or an API node that has not learned
			// its peers yet): the tunnel stays while it is up.
		case !ok || !slices.Equal(n.Addrs, run.addrs):
			log.Info("tunnel node left the cloud's list (or changed its addresses)", "node", run.node, "addrs", run.addrs)
			drop = append(drop, run)
			continue
		case !st.Connected && st.Failures >= replaceAfter && a.spareNode(set.name, nodes, used, usedAddr, failedAt) != "":
			log.Warn("tunnel node keeps failing: replacing it", "node", run.node, "failures", st.Failures, "error", st.LastError)
			failedAt[run.node] = time.Now()
			drop = append(drop, run)
			continue
		}
		keep = append(keep, run)
	}
	if len(drop) > 0 {
		set.mu.Lock()
		set.runs = keep
		set.mu.Unlock()
		for _, run := range drop {
			run.stop()
		}
	}
	used, usedAddr = inUse(keep)
	if !multi {
		if len(keep) == 0 {
			a.startRun(ctx, set, "", nil)
		}
		return
	}
	for len(keep) < min(want, len(nodes)) {
		name := a.spareNode(set.name, nodes, used, usedAddr, failedAt)
		if name == "" {
			return
		}
		run := a.startRun(ctx, set, name, listed[name].Addrs)
		keep = append(keep, run)
		used, usedAddr = inUse(keep)
	}
}

// inUse is the nodes and addresses runs use.
func inUse(runs []*tunnelRun) (map[string]bool, map[netip.Addr]bool) {
	used, usedAddr := map[string]bool{}, map[netip.Addr]bool{}
	for _, run := range runs {
		used[run.node] = true
		for _, ad := range run.addrs {
			usedAddr[ad] = true
		}
	}
	return used, usedAddr
}

// spareNode picks a listed node that no tunnel uses, with an address no
// tunnel dials (two names for one machine would replace each other's
// session there). Nodes that failed least recently come first; among the
// others the order is a hash of gateway and node names (rendezvous
// hashing), so the gateways spread evenly over the nodes and each keeps
// its choice as nodes come and go. "" when there is none.
func (a *Agent) spareNode(gateway string, nodes []cloudapi.Node, used map[string]bool, usedAddr map[netip.Addr]bool, failedAt map[string]time.Time) string {
	best, bestFailed, bestScore := "", time.Time{}, uint64(0)
	for _, n := range nodes {
		if used[n.Name] || len(n.Addrs) == 0 || slices.ContainsFunc(n.Addrs, func(ad netip.Addr) bool { return usedAddr[ad] }) {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(strings.ToLower(gateway) + "\x00" + n.Name))
		score, failed := h.Sum64(), failedAt[n.Name]
		if best == "" || failed.Before(bestFailed) || (failed.Equal(bestFailed) && score > bestScore) {
			best, bestFailed, bestScore = n.Name, failed, score
		}
	}
	return best
}

// startRun starts a tunnel client for set, to node's addrs (or through
// DNS for node ""), and adds it to the set.
func (a *Agent) startRun(ctx context.Context, set *tunnelSet, node string, addrs []netip.Addr) *tunnelRun {
	tr := a.tunnelHTTP.Transport.(*http.Transport).Clone()
	log := a.log.With("component", "tunnel")
	run := &tunnelRun{node: node, addrs: addrs, transport: tr, done: make(chan struct{})}
	if node != "" {
		tr.DialContext = nodeDialer(tr.DialContext, a.cfg.TunnelURL(), addrs, func(ad netip.Addr) { run.dialed.Store(&ad) })
		log = log.With("node", node, "addrs", addrs)
	}
	c := &client.Client{
		URL:        a.cfg.TunnelURL(),
		Name:       set.name,
		Token:      set.token,
		Handler:    a.handleStream,
		HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: http.Header{"User-Agent": {"gatehouse-gateway-agent/" + a.opts.Version}},
		Backoff:    a.opts.TunnelBackoff,
		Logger:     log,
	}
	rctx, cancel := context.WithCancel(ctx)
	run.c, run.cancel = c, cancel
	go func() {
		defer close(run.done)
		if err := c.Run(rctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("tunnel stopped", "error", err)
		}
	}()
	set.mu.Lock()
	set.runs = append(set.runs, run)
	set.mu.Unlock()
	if node != "" {
		log.Info("tunnel to node starting")
	}
	return run
}

// nodeDialer dials the node's addrs, in turn until one connects, instead
// of the tunnel URL's host, on the URL's port: the host stays the TLS
// server name and the Host header, only the connection goes to one node.
// (An agent without IPv6 still reaches a node listed with its IPv6
// address first.) connected is told the address that answered. Other
// hosts (an HTTP proxy) are dialed as they are.
func nodeDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error), tunnelURL string, addrs []netip.Addr, connected func(netip.Addr)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	host := ""
	if u, err := url.Parse(tunnelURL); err == nil {
		host = strings.ToLower(u.Hostname())
	}
	return func(ctx context.Context, network, hostport string) (net.Conn, error) {
		h, port, err := net.SplitHostPort(hostport)
		if err != nil || strings.ToLower(h) != host || len(addrs) == 0 {
			return dial(ctx, network, hostport)
		}
		var errs []error
		for _, ad := range addrs {
			conn, err := dial(ctx, network, net.JoinHostPort(ad.String(), port))
			if err == nil {
				connected(ad)
				return conn, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}

func sameNode(x, y cloudapi.Node) bool { return x.Name == y.Name && slices.Equal(x.Addrs, y.Addrs) }

func nodeNames(nodes []cloudapi.Node) []string {
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return names
}
