// Package clusternode wires one cloud node into a cluster of nodes that
// share a PostgreSQL database (modules/cluster and its link): it joins the
// membership, serves the node-to-node link, keeps the tunnel directory in
// step with the node's hub, and gives ingress, the offline page and
// forwarding a tunnel lookup that reaches a gateway held by any live node.
// It also answers DNS steering (which addresses a tunnel-mode name and the
// zone's name servers resolve to) from the same in-memory view.
//
// It knows nothing of Caddy; modules/node owns its lifetime (across config
// reloads, with the hub).
package clusternode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/cluster"
	"github.com/gatehouse-project/gatehouse/modules/cluster/link"
	"github.com/gatehouse-project/gatehouse/modules/dnszone"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// ErrInvalid: the Config cannot be used.
var ErrInvalid = errors.New("invalid cluster node configuration")

// Config describes this node in the cluster.
type Config struct {
	// Name is the node's name in the cluster and in its link certificate.
	Name string
	// PublicAddrs are the addresses clients reach this node on (DNS
	// steering answers them).
	PublicAddrs []netip.Addr
	// LinkAddr is the host:port other nodes dial for the link.
	LinkAddr string
	// Cert is the node's link certificate (with its key) from the
	// cluster CA; CA holds that CA, the only one the link trusts.
	// Certificate, when set, takes Cert's place: the link asks it on
	// every handshake, so a renewed or rotated certificate serves the
	// next link session (link.Renewing, link.FileCert).
	Cert        tls.Certificate
	Certificate link.CertFunc
	CA          *x509.CertPool
	// Lease is the membership lease (0: cluster.DefaultLease).
	Lease time.Duration
	// DSN is the PostgreSQL database the nodes share (the registry's);
	// Schema, when set, overrides the DSN's search_path for the cluster
	// tables.
	DSN, Schema string
	// Zone names the name servers of nodes whose name is a single label
	// (NAME.ZONE); a dotted node name is used as it is.
	Zone string
	// Link tunes the link sessions; zero fields take the defaults.
	Link tunnel.Config
	// Logger receives joins and departures (info) and this node's holds
	// and releases (debug). Nil discards them.
	Logger *slog.Logger
}

// Cluster is this node's part in the cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	self   string
	zone   string
	hub    *hub.Hub
	member *cluster.Member
	link   *link.Link
	log    *slog.Logger

	version atomic.Uint64
	served  chan error
	stopSub func()
	quit    chan struct{}
	watched sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Start joins the cluster, serves the link on ln (a plain TCP listener:
// the link runs its own TLS) and publishes the tunnels of h in the
// directory from now on, those live now included. Close undoes it all;
// on error, ln is closed.
func Start(ctx context.Context, cfg Config, h *hub.Hub, ln net.Listener) (*Cluster, error) {
	fail := func(err error) (*Cluster, error) {
		_ = ln.Close()
		return nil, err
	}
	switch {
	case h == nil:
		return fail(fmt.Errorf("%w: no hub", ErrInvalid))
	case cfg.DSN == "":
		return fail(fmt.Errorf("%w: the cluster needs the PostgreSQL store's DSN", ErrInvalid))
	case cfg.LinkAddr == "":
		return fail(fmt.Errorf("%w: no link address for the other nodes", ErrInvalid))
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := cluster.Join(ctx, cfg.DSN, cluster.Self{Name: cfg.Name, PublicAddrs: cfg.PublicAddrs, LinkAddr: cfg.LinkAddr},
		cluster.Options{Lease: cfg.Lease, Schema: cfg.Schema, Logger: logger})
	if err != nil {
		return fail(err)
	}
	l, err := link.New(link.Config{Name: cfg.Name, Cert: cfg.Cert, Certificate: cfg.Certificate, CA: cfg.CA, Peers: m, Local: h, Tunnel: cfg.Link, Logger: logger})
	if err != nil {
		_ = m.Close()
		return fail(err)
	}
	c := &Cluster{
		self:   m.Self().Name,
		zone:   strings.ToLower(strings.TrimSuffix(cfg.Zone, ".")),
		hub:    h,
		member: m,
		link:   l,
		log:    logger.With("node", m.Self().Name),
		served: make(chan error, 1),
		quit:   make(chan struct{}),
	}
	go func() { c.served <- l.Serve(ln) }()
	ch, stop := m.Subscribe()
	c.stopSub = stop
	c.watched.Go(func() { c.watch(ch) })
	h.Observe(func(name string, live bool) {
		// Under the hub's lock, in the order of the changes: Hold and
		// Release only record them.
		if live {
			m.Hold(name)
			c.log.Debug("holding gateway", "gateway", name)
		} else {
			m.Release(name)
			c.log.Debug("released gateway", "gateway", name)
		}
		// TunnelAddrs counts this hub's tunnels before the directory's
		// round trip: DNS must see the change now.
		c.version.Add(1)
	})
	c.log.Info("joined the cluster", "nodes", names(m.Nodes()))
	return c, nil
}

// watch follows the membership: it bumps the steering version on every
// change, logs joins and departures, and ends the relays to nodes that
// left, until Close.
func (c *Cluster) watch(ch <-chan struct{}) {
	known := map[string]bool{}
	for _, n := range c.member.Nodes() {
		known[n.Name] = true
	}
	for {
		select {
		case <-ch:
		case <-c.quit:
			return
		}
		c.version.Add(1)
		now := map[string]bool{}
		for _, n := range c.member.Nodes() {
			now[n.Name] = true
			if !known[n.Name] {
				c.log.Info("node joined the cluster", "peer", n.Name, "addrs", n.PublicAddrs)
			}
		}
		for name := range known {
			if !now[name] {
				c.log.Info("node left the cluster", "peer", name)
				c.link.NodeLeft(name)
			}
		}
		known = now
	}
}

// Close stops publishing the hub's tunnels, leaves the cluster (its
// directory entries go with its row, announced at once) and closes the
// link. Only the first call counts.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.hub.Observe(nil)
		err := c.member.Close()
		c.stopSub()
		close(c.quit)
		c.watched.Wait()
		err = errors.Join(err, c.link.Close(), <-c.served)
		c.closeErr = err
	})
	return c.closeErr
}

// SetCredentials makes the link's new sessions use the certificate and
// cluster CA of cfg (a reload that keeps the running cluster); the open
// ones carry on. A cfg without them changes nothing.
func (c *Cluster) SetCredentials(cfg Config) {
	if cfg.CA == nil {
		return
	}
	cert := cfg.Certificate
	if cert == nil {
		if len(cfg.Cert.Certificate) == 0 {
			return
		}
		static := cfg.Cert
		cert = func() (*tls.Certificate, error) { return &static, nil }
	}
	c.link.SetCredentials(cert, cfg.CA)
}

// Member is the cluster membership, for its Stats and view.
func (c *Cluster) Member() *cluster.Member { return c.member }

// Link is the node-to-node link, for its Stats.
func (c *Cluster) Link() *link.Link { return c.link }

// Name is this node's name.
func (c *Cluster) Name() string { return c.self }

// Lookup returns a way to gateway name: the tunnel this node holds, else
// a tunnel through the other live nodes that hold one. It is the lookup
// ingress, the offline page and forwarding use, so a gateway is offline
// only when no live node holds it.
func (c *Cluster) Lookup(name string) (hub.Tunnel, bool) {
	if t, ok := c.hub.Lookup(name); ok {
		return t, true
	}
	var relays []*link.Relay
	for _, n := range c.member.Holders(name) {
		if n.Name != c.self {
			relays = append(relays, c.link.Relay(n.Name))
		}
	}
	if len(relays) == 0 {
		return nil, false
	}
	return &remote{c: c, gateway: strings.ToLower(name), relays: relays}, true
}

// Holders lists the live nodes holding gateway's tunnel, sorted: the
// directory's view, with this node's own hub counted before the
// directory's round trip comes back. It never waits on the database.
func (c *Cluster) Holders(gateway string) []string {
	out := names(c.member.Holders(gateway))
	if _, ok := c.hub.Lookup(gateway); ok && !slices.Contains(out, c.self) {
		out = append(out, c.self)
		slices.Sort(out)
	}
	return out
}

// Directory returns the live holders of every gateway held somewhere,
// this node's hub included as in Holders.
func (c *Cluster) Directory() map[string][]string {
	dir := c.member.Directory()
	for _, name := range c.hub.Names() {
		name = strings.ToLower(name)
		if !slices.Contains(dir[name], c.self) {
			dir[name] = append(dir[name], c.self)
			slices.Sort(dir[name])
		}
	}
	return dir
}

// HeldCounts returns how many gateways each live node holds, every live
// node included: this node's from its hub, the others' from the
// directory.
func (c *Cluster) HeldCounts() map[string]int {
	counts := c.member.HeldCounts()
	counts[c.self] = len(c.hub.Names())
	return counts
}

// Nodes lists the live nodes, sorted by name (the agents' list of nodes
// to connect to, GET /v1/nodes).
func (c *Cluster) Nodes() []cluster.Node { return c.member.Nodes() }

// TunnelAddrs returns the public addresses gateway's tunnel-mode name
// resolves to: those of the nodes holding its tunnel, or every live
// node's when none does. Empty when the view is empty (DNS then answers
// the configured tunnel address).
func (c *Cluster) TunnelAddrs(gateway string) []netip.Addr {
	nodes := c.member.Holders(gateway)
	if _, ok := c.hub.Lookup(gateway); ok && !slices.ContainsFunc(nodes, func(n cluster.Node) bool { return n.Name == c.self }) {
		// Held here before the directory's round trip came back.
		nodes = append(nodes, c.member.Self())
	}
	if len(nodes) == 0 {
		nodes = c.member.Nodes()
	}
	var addrs []netip.Addr
	for _, n := range nodes {
		for _, a := range n.PublicAddrs {
			if !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs
}

// NameServers returns the live nodes as the zone's name servers, sorted
// by name: NAME.ZONE for a single-label node name, the name itself for a
// dotted one, with the node's public addresses.
func (c *Cluster) NameServers() []dnszone.Nameserver {
	var out []dnszone.Nameserver
	for _, n := range c.member.Nodes() {
		if len(n.PublicAddrs) == 0 {
			continue
		}
		out = append(out, dnszone.Nameserver{Name: c.nsName(n.Name), Addrs: slices.Clone(n.PublicAddrs)})
	}
	slices.SortFunc(out, func(a, b dnszone.Nameserver) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (c *Cluster) nsName(node string) string {
	if strings.Contains(node, ".") || c.zone == "" {
		return node
	}
	return node + "." + c.zone
}

// Version changes whenever TunnelAddrs or NameServers may answer
// differently: on every change of the membership or the directory.
func (c *Cluster) Version() uint64 { return c.version.Load() }

func names(ns []cluster.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

// remote is the tunnel of a gateway that other nodes hold: it opens
// through the first of their relays that takes the stream.
type remote struct {
	c       *Cluster
	gateway string
	relays  []*link.Relay
}

var (
	_ hub.Tunnel       = (*remote)(nil)
	_ hub.EarlyOpener  = (*remote)(nil)
	_ dnszone.Steering = (*Cluster)(nil)
)

// Open tries each holder in turn (sorted by name): a holder that cannot
// be reached, or no longer holds the gateway, gives way to the next; the
// gateway's own refusal is final, since any holder would give it.
func (r *remote) Open(ctx context.Context, m tunnel.Meta) (hub.Stream, error) {
	return r.OpenEarly(ctx, m, nil)
}

// OpenEarly is Open with the stream's first bytes (the visitor's
// ClientHello) sent along with the opening, through each holder in turn:
// a holder that refuses drops them, and the next one is sent them again.
func (r *remote) OpenEarly(ctx context.Context, m tunnel.Meta, early []byte) (hub.Stream, error) {
	var errs []error
	for _, rl := range r.relays {
		st, err := rl.OpenEarly(ctx, m, early)
		if err == nil {
			return st, nil
		}
		errs = append(errs, fmt.Errorf("through %s: %w", rl.Node(), err))
		if re, ok := errors.AsType[*tunnel.RefusedError](err); ok && !holderGone(re.Reason) {
			return nil, err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

// holderGone tells the refusals that are about the holder, not the
// gateway: another holder may still do.
func holderGone(reason string) bool {
	switch reason {
	case link.ReasonNotHere, link.ReasonOffline, link.ReasonNotMember:
		return true
	}
	return false
}

// Done is closed when the first holder's relay ends (its node left or the
// link to it died): the caller looks the gateway up again.
func (r *remote) Done() <-chan struct{} { return r.relays[0].Done() }

// Err is nil while some live node still holds the gateway through a relay
// that is open.
func (r *remote) Err() error {
	for _, rl := range r.relays {
		if rl.Err() == nil && slices.ContainsFunc(r.c.member.Holders(r.gateway), func(n cluster.Node) bool { return n.Name == rl.Node() }) {
			return nil
		}
	}
	return fmt.Errorf("%w: no live node holds %s", link.ErrClosed, r.gateway)
}

// CloseWithReason closes nothing: the relays are shared by every gateway
// of their nodes and the tunnels belong to the nodes that hold them.
func (r *remote) CloseWithReason(string) error { return nil }

// Kind is link.KindRelay.
func (r *remote) Kind() string { return link.KindRelay }
