package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/gatehouse-project/gatehouse/modules/node/clusternode"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// Shared holds what outlives one node across config reloads: the hub of
// live tunnels of each zone. Caddy provisions and starts the new config
// before it stops the old one; if each node had its own hub, every reload
// would close every tunnel and every relay in flight over them. With
// Shared, the new node takes the hub the old one still holds, and the hub
// closes (telling agents the cloud shuts down) only when the last holder
// lets go. The zero value is ready to use.
type Shared struct {
	mu   sync.Mutex
	hubs map[string]*sharedHub // by zone
}

type sharedHub struct {
	hub  *hub.Hub
	refs int

	// The cluster publishes the hub's tunnels and reaches other nodes'
	// for as long as the hub lives: a reload must not make the node
	// leave and rejoin (dropping its directory entries meanwhile).
	clusterMu  sync.Mutex
	cluster    *clusternode.Cluster
	clusterCfg clusternode.Config
}

// Lease is one holder's claim on a shared hub.
type Lease struct {
	hub     *hub.Hub
	sh      *sharedHub
	release func() error
}

// Acquire returns a lease on zone's hub, creating the hub (with logger)
// for the first holder.
func (s *Shared) Acquire(zone string, logger *slog.Logger) *Lease {
	key := strings.ToLower(strings.TrimSuffix(zone, "."))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hubs == nil {
		s.hubs = make(map[string]*sharedHub)
	}
	sh := s.hubs[key]
	if sh == nil {
		sh = &sharedHub{hub: &hub.Hub{Logger: logger}}
		s.hubs[key] = sh
	}
	sh.refs++
	return &Lease{hub: sh.hub, sh: sh, release: sync.OnceValue(func() error {
		s.mu.Lock()
		sh.refs--
		last := sh.refs == 0
		if last {
			delete(s.hubs, key)
		}
		s.mu.Unlock()
		if !last {
			return nil
		}
		var err error
		sh.clusterMu.Lock()
		if sh.cluster != nil {
			err = sh.cluster.Close()
		}
		sh.clusterMu.Unlock()
		return errors.Join(err, sh.hub.Close())
	})}
}

// JoinCluster makes the leased hub's node a cluster member with cfg,
// serving the link on the listener listen opens, and returns the
// cluster. The first holder joins; later holders (a reload) get the same
// cluster, as long as they describe the node the same way: a changed
// name, link address or public address needs a restart; its link
// certificate and CA take over from the running ones'. The cluster
// leaves when the last holder releases the hub.
func (l *Lease) JoinCluster(ctx context.Context, cfg clusternode.Config, listen func() (net.Listener, error)) (*clusternode.Cluster, error) {
	sh := l.sh
	sh.clusterMu.Lock()
	defer sh.clusterMu.Unlock()
	if sh.cluster != nil {
		old := sh.clusterCfg
		if !strings.EqualFold(old.Name, cfg.Name) || old.LinkAddr != cfg.LinkAddr || !slices.Equal(old.PublicAddrs, cfg.PublicAddrs) {
			return nil, fmt.Errorf("gatehouse cluster: node %q (link %s) is running; restart to change its name or addresses", old.Name, old.LinkAddr)
		}
		// The new configuration's certificate (freshly issued, or
		// other files) serves the next link sessions.
		sh.cluster.SetCredentials(cfg)
		return sh.cluster, nil
	}
	ln, err := listen()
	if err != nil {
		return nil, fmt.Errorf("gatehouse cluster: link listener: %w", err)
	}
	c, err := clusternode.Start(ctx, cfg, sh.hub, ln)
	if err != nil {
		return nil, fmt.Errorf("gatehouse cluster: %w", err)
	}
	sh.cluster, sh.clusterCfg = c, cfg
	return c, nil
}

// Hub is the leased hub.
func (l *Lease) Hub() *hub.Hub { return l.hub }

// Release lets go of the hub; the last holder's release closes it. Only
// the first call counts.
func (l *Lease) Release() error { return l.release() }
