package node

import (
	"log/slog"
	"strings"
	"sync"

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
}

// Lease is one holder's claim on a shared hub.
type Lease struct {
	hub     *hub.Hub
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
	return &Lease{hub: sh.hub, release: sync.OnceValue(func() error {
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
		return sh.hub.Close()
	})}
}

// Hub is the leased hub.
func (l *Lease) Hub() *hub.Hub { return l.hub }

// Release lets go of the hub; the last holder's release closes it. Only
// the first call counts.
func (l *Lease) Release() error { return l.release() }
