package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/pagekite"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// newKites builds the PageKite frontend of the node: kites authenticate
// with their gateway's token (unsealed by the registry) and register in
// the hub like an agent's session.
func (n *Node) newKites(cfg Config) *pagekite.Server {
	srv := &pagekite.Server{
		Authenticate: n.kiteSecret,
		Register:     n.registerKite,
		Logger:       cfg.KiteLogger,
		Limits:       cfg.KiteLimits,
	}
	return srv
}

// kiteSecret is the secret of the kite for domain: its gateway's token.
// Only a gateway's own name (NAME.ZONE, not a name below it: the kite
// serves that name, and ingress routes the names below it there anyway)
// of a gateway not disabled has one. An expired gateway's kite is let in,
// unlike an agent: a WebThings gateway pings only once its kite is up, so
// it would never come back; the kite's signature proves the token as a
// ping does, and registerKite brings the gateway back with one.
func (n *Node) kiteSecret(ctx context.Context, domain, _ string) (string, error) {
	unknown := func(why string) error {
		return fmt.Errorf("%w: %s: %s", pagekite.ErrUnknownKite, domain, why)
	}
	name, ok := n.GatewayName(domain)
	if !ok || !strings.EqualFold(strings.TrimSuffix(domain, "."), name+"."+n.zone) {
		return "", unknown("not a gateway name of " + n.zone)
	}
	g, err := n.reg.Gateway(ctx, name)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return "", unknown("no such gateway")
	case err != nil:
		return "", fmt.Errorf("registry unavailable: %w", err)
	case g.Disabled:
		return "", unknown("gateway disabled by the operator")
	}
	secret, err := n.reg.KiteSecret(ctx, name)
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrNoSealKey):
		// Its token has not been presented since the seal key was set.
		return "", unknown("no sealed token yet")
	case err != nil:
		return "", err
	}
	return secret, nil
}

// registerKite makes an accepted kite the gateway's tunnel. A live kite
// keeps the name and the newcomer gets Duplicate, as PyPagekite expects:
// a kite cannot be told it was replaced, so two kites of one name that
// replaced each other would reconnect and evict each other forever. Over
// an agent's session the kite is newer and replaces it, as one agent
// replaces another.
func (n *Node) registerKite(domain string, t hub.Tunnel) error {
	name := strings.TrimSuffix(strings.ToLower(strings.TrimSuffix(domain, ".")), "."+n.zone)
	if err := n.admitKite(name, t); err != nil {
		return err
	}
	err := n.lease.Hub().RegisterUnless(name, t, func(old hub.Tunnel) bool {
		return old.Kind() == pagekite.KindPageKite
	})
	if err != nil {
		return err
	}
	// The kite has proved it holds the token: record it as a ping now
	// (a WebThings gateway pings only once its kite is up), then with
	// every live tunnel. Inline, so no goroutine outlives a stopped node:
	// it costs the kite's handshake one group commit.
	n.tunnelAlive(context.Background(), name, t)
	return nil
}

// admitKite checks a kite that proved its token before it becomes the
// gateway's tunnel: the token of an acme-dns account is refused from
// outside its allowfrom networks, as on the API and the agents' tunnel.
// An expired gateway is brought back, with the ping its gateway would send
// (and cannot, its kite being down).
func (n *Node) admitKite(name string, t hub.Tunnel) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := n.reg.Gateway(ctx, name)
	if err != nil {
		return fmt.Errorf("reading gateway %s: %w", name, err)
	}
	var public netip.Addr
	if r, ok := t.(remoter); ok {
		public = r.Remote().Addr()
	}
	if len(g.AllowFrom) > 0 && !g.AllowsFrom(public) {
		return fmt.Errorf("gateway %s: its token is not accepted from %v (allowfrom)", name, public)
	}
	if !g.Expired {
		return nil
	}
	token, err := n.reg.KiteSecret(ctx, name)
	if err != nil {
		return fmt.Errorf("gateway %s: %w", name, err)
	}
	if _, err := n.reg.Ping(ctx, token, public, nil); err != nil {
		return fmt.Errorf("bringing gateway %s back: %w", name, err)
	}
	n.logger.Info("expired gateway back with its kite", "gateway", name)
	return nil
}

// Kites is the node's PageKite frontend, nil when PageKite is off (no
// token seal key: the cloud keeps no token to check a kite's signature).
func (n *Node) Kites() *pagekite.Server { return n.kites }

// remoter is a tunnel that knows its gateway's public address.
type remoter interface{ Remote() netip.AddrPort }

// tunnelAlive records the live tunnel t of name as a ping from its public
// address.
func (n *Node) tunnelAlive(ctx context.Context, name string, t hub.Tunnel) {
	var public netip.Addr
	if r, ok := t.(remoter); ok {
		public = r.Remote().Addr()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := n.reg.TunnelAlive(ctx, name, public); err != nil && ctx.Err() == nil && !errors.Is(err, registry.ErrStopped) {
		n.logger.Warn("recording a live tunnel", "gateway", name, "error", err)
	}
}

// tunnelPingWorkers bounds the live-tunnel pings in flight: enough for the
// registry's group commit to fill its batches.
const tunnelPingWorkers = 64

// pingTunnels records every live tunnel every interval, so that a gateway
// stays registered while its tunnel of either kind is up, until ctx ends.
func (n *Node) pingTunnels(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := n.lease.Hub()
		sem := make(chan struct{}, tunnelPingWorkers)
		var wg sync.WaitGroup
		for _, name := range h.Names() {
			tn, ok := h.Lookup(name)
			if !ok {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			wg.Go(func() {
				defer func() { <-sem }()
				n.tunnelAlive(ctx, name, tn)
			})
		}
		wg.Wait()
	}
}
