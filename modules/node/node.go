// Package node is one cloud node: it owns the registry (over the store it
// is given), the zone's in-memory DNS index and handler, the hub of live
// tunnels and the forwarding relay, and keeps them in step: it loads the
// index at start, follows the changes other nodes make to a shared store,
// resyncs after a lost notification connection, and applies every
// registry event to the index and the tunnels.
//
// It knows nothing of Caddy: the `gatehouse` Caddy app is its lifecycle and
// configuration only. What must outlive a config reload (the hub, so that
// tunnels and relays in flight survive) is reference counted in Shared.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/dnszone"
	"github.com/gatehouse-project/gatehouse/modules/forward"
	"github.com/gatehouse-project/gatehouse/modules/node/clusternode"
	"github.com/gatehouse-project/gatehouse/modules/pagekite"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// ErrNoZone is returned by New without a zone.
var ErrNoZone = errors.New("node: zone is required")

// Config configures a Node.
type Config struct {
	// Zone is the DNS zone gateways are named in, without trailing dot.
	Zone string
	// DNS, when set, makes the node keep the zone's DNS index and handler;
	// its Zone is set from Zone. Nil: no DNS (another server may serve it).
	DNS *dnszone.Config
	// Registry is the registry's policy; the names the zone itself
	// answers for are added to its Reserved names.
	Registry registry.Config
	// Notifier sends the registry's mails; nil sends none.
	Notifier registry.Notifier
	// Forward are the agent-to-agent forwarding rules (none: all refused).
	Forward forward.Rules
	// ForwardOpenTimeout bounds the wait for a forward's target agent.
	ForwardOpenTimeout time.Duration
	// Logger receives the node's events; nil discards them.
	Logger *slog.Logger

	// TunnelPingInterval is how often every live tunnel's gateway is
	// recorded as pinged from the tunnel's address, so that it does not
	// expire while connected; shorter than Registry.ExpireAfter. Zero:
	// DefaultTunnelPingInterval, capped at a quarter of ExpireAfter.
	TunnelPingInterval time.Duration
	// KiteLogger and KiteLimits go to the PageKite frontend, which the
	// node runs when Registry.Sealer is set.
	KiteLogger *zap.Logger
	KiteLimits pagekite.Limits

	// Cluster, when set, makes the node a member of the cluster of nodes
	// sharing its PostgreSQL database: it publishes its tunnels in the
	// directory and reaches the gateways other nodes hold. Nil: a single
	// node, as with SQLite.
	Cluster *ClusterConfig
}

// ClusterConfig is the node's part in a cluster.
type ClusterConfig struct {
	clusternode.Config
	// Listen opens the link's TCP listener; it is called once per
	// cluster join, not on a reload that keeps the running cluster.
	Listen func() (net.Listener, error)
}

// Tunnels finds a gateway's live tunnel: the hub's, or through the
// cluster a tunnel another node holds.
type Tunnels interface {
	Lookup(name string) (hub.Tunnel, bool)
}

// DefaultTunnelPingInterval is how often a live tunnel counts as a ping:
// as often as a WebThings gateway pings.
const DefaultTunnelPingInterval = time.Hour

// Node is one cloud node. New builds it, Start loads and runs it, Stop ends
// its background work and lets go of the shared hub, Close closes the
// store.
type Node struct {
	zone    string
	store   registry.Store
	reg     *registry.Registry
	index   *dnszone.Index
	handler *dnszone.Handler
	lease   *Lease
	relay   *forward.Relay
	kites   *pagekite.Server
	logger  *slog.Logger
	// clusterCfg is nil for a single node; cluster is set once Start
	// has joined it.
	clusterCfg *ClusterConfig
	cluster    atomic.Pointer[clusternode.Cluster]

	tunnelPing time.Duration

	cancel   context.CancelFunc
	stopOnce sync.Once
	// background tracks the goroutines the node starts (following other
	// nodes' changes, dropping revoked tunnels); Stop waits for them.
	background sync.WaitGroup

	mu      sync.Mutex
	resyncs uint64
}

// New builds a node over store, holding the hub of lease. From the moment
// New returns, the hub hands the streams agents open to this node's relay:
// on a reload the newest node's rules apply, so New must be the last step
// that can fail. On error, the caller still owns store and lease.
func New(store registry.Store, cfg Config, lease *Lease) (*Node, error) {
	zone := strings.ToLower(strings.TrimSuffix(cfg.Zone, "."))
	if zone == "" {
		return nil, ErrNoZone
	}
	if err := cfg.Forward.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{zone: zone, store: store, lease: lease, logger: logger}
	if cfg.Cluster != nil {
		cc := *cfg.Cluster
		if cc.Zone == "" {
			cc.Zone = zone
		}
		if cc.Logger == nil {
			cc.Logger = logger
		}
		n.clusterCfg = &cc
	}
	rc := cfg.Registry
	if cfg.DNS != nil {
		zc := *cfg.DNS
		zc.Zone = zone
		n.index = dnszone.NewIndex()
		h, err := dnszone.NewHandler(zc, n.index, logger)
		if err != nil {
			return nil, fmt.Errorf("gatehouse dns: %w", err)
		}
		n.handler = h
		// Names the zone itself answers for cannot be registered.
		rc.Reserved = append(append([]string{}, rc.Reserved...), zc.ReservedNames()...)
	}
	n.reg = registry.New(store, rc, cfg.Notifier)
	n.reg.Observe(n.apply)
	n.relay = &forward.Relay{
		Tunnels:     n,
		Rules:       cfg.Forward,
		OpenTimeout: cfg.ForwardOpenTimeout,
		Logger:      logger,
		Exists:      n.reg.Exists,
	}
	n.tunnelPing = cfg.TunnelPingInterval
	if n.tunnelPing <= 0 {
		n.tunnelPing = DefaultTunnelPingInterval
		if e := cfg.Registry.ExpireAfter; e > 0 {
			n.tunnelPing = max(min(n.tunnelPing, e/4), 50*time.Millisecond)
		}
	}
	if cfg.Registry.Sealer != nil {
		n.kites = n.newKites(cfg)
	}
	lease.Hub().SetHandler(n.relay.Handle)
	return n, nil
}

// Start loads the DNS index from the store, runs the registry's background
// work and follows the changes of other nodes sharing the store; with a
// cluster configured it joins the cluster first (or, on a reload, takes
// the running one over with the hub). Joining is left to Start, not New,
// so that validating a configuration never touches the membership.
func (n *Node) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	if cc := n.clusterCfg; cc != nil {
		joinCtx, cancelJoin := context.WithTimeout(ctx, 30*time.Second)
		c, err := n.lease.JoinCluster(joinCtx, cc.Config, cc.Listen)
		cancelJoin()
		if err != nil {
			return err
		}
		n.cluster.Store(c)
		if n.handler != nil {
			// Tunnel-mode names, NS and glue follow the live nodes.
			n.handler.SetSteering(c)
		}
	}
	if n.index != nil {
		start := time.Now()
		if err := n.load(ctx); err != nil {
			return fmt.Errorf("gatehouse: loading the zone: %w", err)
		}
		n.logger.Info("zone loaded", "gateways", n.index.Len(), "took", time.Since(start))
	}
	n.reg.Start()
	ch, err := n.reg.Changes(ctx)
	if err != nil {
		return fmt.Errorf("gatehouse: listening for changes: %w", err)
	}
	if ch != nil {
		n.background.Go(func() { n.followChanges(ctx, ch) })
	}
	n.background.Go(func() { n.pingTunnels(ctx, n.tunnelPing) })
	return nil
}

// load puts every gateway and the zone's own records in the index.
func (n *Node) load(ctx context.Context) error {
	err := n.reg.ForEachGateway(ctx, func(g *registry.Gateway, recs []registry.Record) error {
		n.index.Put(g, recs)
		return nil
	})
	if err != nil {
		return err
	}
	return n.loadZoneRecords(ctx)
}

// loadZoneRecords puts the zone's own records (the operator's ACME
// challenges) in the index, at start and after missed changes, through the
// registry's one records path: the reload's event reaches apply.
func (n *Node) loadZoneRecords(ctx context.Context) error {
	if err := n.reg.Reload(ctx, registry.ZoneSubtree()); err != nil {
		return fmt.Errorf("gatehouse: loading the zone's own records: %w", err)
	}
	return nil
}

// followChanges applies other nodes' writes to this node's in-memory state
// until ctx ends or the store closes the channel.
func (n *Node) followChanges(ctx context.Context, ch <-chan registry.Subtree) {
	for st := range ch {
		if st == registry.ResyncAll {
			n.resync(ctx)
			continue
		}
		if err := n.reg.Reload(ctx, st); err != nil && ctx.Err() == nil {
			n.logger.Warn("reloading changed records", "subtree", st.String(), "error", err)
		}
	}
}

// resync reloads the whole zone after changes may have been missed. Names
// gone from the store meanwhile are found by comparing with a fresh index.
func (n *Node) resync(ctx context.Context) {
	n.mu.Lock()
	n.resyncs++
	n.mu.Unlock()
	if n.index == nil {
		return
	}
	fresh := dnszone.NewIndex()
	err := n.reg.ForEachGateway(ctx, func(g *registry.Gateway, recs []registry.Record) error {
		n.index.Put(g, recs)
		fresh.Put(g, recs)
		return nil
	})
	if err != nil {
		n.logger.Warn("resyncing the zone", "error", err)
		return
	}
	for _, name := range n.index.Names() {
		if !fresh.Has(name) {
			n.index.Remove(name)
		}
	}
	if err := n.loadZoneRecords(ctx); err != nil {
		n.logger.Warn("resyncing the zone's own records", "error", err)
	}
	n.logger.Info("zone resynced after a lost notification connection", "gateways", n.index.Len())
}

// apply keeps the DNS index and the live tunnels in step with the registry.
func (n *Node) apply(ev registry.Event) {
	if name, ok := ev.Subtree.Gateway(); ok && ev.Revoked {
		// Drop waits for the agent to hear why; the registry must not.
		reason := "gateway " + revokeReason(ev)
		n.background.Go(func() { n.lease.Hub().Drop(name, reason) })
	}
	if n.index != nil {
		n.index.Apply(ev)
	}
}

func revokeReason(ev registry.Event) string {
	switch {
	case ev.Gateway == nil:
		return "unsubscribed"
	case ev.Gateway.Disabled:
		return "disabled by the operator"
	case ev.Gateway.Expired:
		return "expired"
	}
	return "token replaced"
}

// Stop ends the background work and lets go of the hub (the last holder
// closes it). Only the first call counts.
func (n *Node) Stop() error {
	var err error
	n.stopOnce.Do(func() {
		if n.cancel != nil {
			n.cancel()
		}
		n.reg.Stop()
		n.background.Wait()
		err = n.lease.Release()
	})
	return err
}

// Close stops the node if it was not, and closes the store.
func (n *Node) Close() error {
	return errors.Join(n.Stop(), n.store.Close())
}

// Registry is the node's registry.
func (n *Node) Registry() *registry.Registry { return n.reg }

// Index is the zone's DNS index, nil without DNS.
func (n *Node) Index() *dnszone.Index { return n.index }

// DNSHandler answers the zone's queries, nil without DNS.
func (n *Node) DNSHandler() *dnszone.Handler { return n.handler }

// Hub is the hub of live tunnels, shared with the other nodes of the
// same Shared and zone across reloads.
func (n *Node) Hub() *hub.Hub { return n.lease.Hub() }

// Tunnels finds gateways' live tunnels for ingress, the offline page and
// forwarding: in the hub, and in a cluster through the other nodes.
func (n *Node) Tunnels() Tunnels { return n }

// Lookup returns a live way to gateway name: its tunnel on this node, or,
// once the node is in a cluster, through another node that holds one.
func (n *Node) Lookup(name string) (hub.Tunnel, bool) {
	if c := n.cluster.Load(); c != nil {
		return c.Lookup(name)
	}
	return n.lease.Hub().Lookup(name)
}

// Cluster is the node's part in its cluster, nil for a single node and
// before Start.
func (n *Node) Cluster() *clusternode.Cluster { return n.cluster.Load() }

// Relay is the forwarding relay, for its counters.
func (n *Node) Relay() *forward.Relay { return n.relay }

// Zone is the zone, lower case without trailing dot.
func (n *Node) Zone() string { return n.zone }

// Resyncs counts the full reloads after a lost notification connection.
func (n *Node) Resyncs() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.resyncs
}

// AuthenticateTunnel admits a tunnel for name only with name's own token,
// so a gateway can never receive another gateway's traffic. Its refusals
// are *tunnel.RefusedError, which the agent hears.
func (n *Node) AuthenticateTunnel(ctx context.Context, name, key string) error {
	refuse := func(reason string) error { return &tunnel.RefusedError{Reason: reason} }
	g, err := n.reg.Authenticate(ctx, key)
	if errors.Is(err, registry.ErrNotFound) {
		return refuse("unknown token")
	}
	if errors.Is(err, registry.ErrDisabled) {
		return refuse("gateway disabled by the operator")
	}
	if err != nil {
		// Not a refusal: the agent only learns that authentication failed.
		return fmt.Errorf("registry unavailable: %w", err)
	}
	if g.Name != name {
		return refuse(fmt.Sprintf("token does not belong to %q", name))
	}
	// An acme-dns account's key is its token: allowfrom holds here as on
	// the API (regapi puts the client's address in the context).
	if ip, ok := registry.ClientIPFrom(ctx); ok && !g.AllowsFrom(ip) {
		return refuse(fmt.Sprintf("token not accepted from %s (the gateway's allowfrom)", ip))
	}
	if g.Expired {
		return refuse("gateway expired: ping to bring it back first")
	}
	return nil
}

// GatewayName returns the gateway that host (a TLS server name or an HTTP
// Host, with or without port) belongs to: NAME for NAME.ZONE and for any
// name below it (a.b.NAME.ZONE), compared case-insensitively. ok is false
// for the zone itself, names outside it, and labels that no gateway can
// hold (api, www, ns1, ... and the configured reserved names), so that the
// cloud's own sites are never taken for a gateway.
func (n *Node) GatewayName(host string) (name string, ok bool) {
	return GatewayName(host, n.zone, func(s string) bool { return n.reg.Names().Check(s) == nil })
}

// GatewayName is Node.GatewayName with the zone and the name check as
// arguments.
//
// The ingress asks this for every new connection, so it allocates nothing
// for the usual lower-case SNI: no SplitHostPort error without a colon,
// no "."+zone strings.
func GatewayName(host, zone string, valid func(string) bool) (string, bool) {
	if strings.IndexByte(host, ':') >= 0 {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	zone = strings.ToLower(strings.TrimSuffix(zone, "."))
	// host ends in "."+zone
	if zone == "" || len(host) <= len(zone) || host[len(host)-len(zone)-1] != '.' || !strings.HasSuffix(host, zone) {
		return "", false
	}
	rest := host[:len(host)-len(zone)-1]
	name := rest[strings.LastIndexByte(rest, '.')+1:]
	if name == "" || !valid(name) {
		return "", false
	}
	return name, true
}
