package pgstore

import (
	"github.com/gatehouse-project/gatehouse/modules/registry"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// legacyZoneName is how nodes before the one records path announced the
// zone's records, so that a cluster being upgraded node by node still
// follows them; it can never be a gateway's name.
const legacyZoneName = "@"

// Reconnection backoff of a listener whose connection dropped.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Changes listens for other nodes' announcements on a dedicated
// connection and delivers the changed gateway names until ctx ends or the
// store closes; then the channel closes. The LISTEN is in place when
// Changes returns, so every change committed afterwards is delivered. If
// the connection drops, the listener reconnects with backoff and, since
// what other nodes committed meanwhile is not replayed, delivers
// registry.ResyncAll.
func (s *Store) Changes(ctx context.Context) (<-chan registry.Subtree, error) {
	// Registering under the lock keeps Close from missing a listener
	// that starts while it waits for the others.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("listen for changes: store closed")
	}
	s.listeners.Add(1)
	s.mu.Unlock()
	conn, err := s.listen(ctx)
	if err != nil {
		s.listeners.Done()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.stop, cancel)
	out := make(chan registry.Subtree, 256)
	go func() {
		defer s.listeners.Done()
		defer close(out)
		defer stopOnClose()
		defer cancel()
		s.deliver(ctx, conn, out)
	}()
	return out, nil
}

// listen opens a connection and subscribes it to the store's channel.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.listenConfig)
	if err != nil {
		return nil, fmt.Errorf("listen for changes: %w", err)
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("listen for changes: %w", err)
	}
	return conn, nil
}

// deliver forwards other nodes' names from conn to out until ctx ends,
// replacing conn when it fails.
func (s *Store) deliver(ctx context.Context, conn *pgx.Conn, out chan<- registry.Subtree) {
	backoff := minBackoff
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			closeConn(conn)
			for {
				if ctx.Err() != nil {
					return
				}
				if conn, err = s.listen(ctx); err == nil {
					backoff = minBackoff
					// What other nodes committed while we were away
					// is lost: ask the reader to reload everything.
					select {
					case out <- registry.ResyncAll:
					case <-ctx.Done():
						closeConn(conn)
						return
					}
					break
				}
				// Jitter spreads the reconnections of many nodes after
				// a database restart.
				wait := backoff/2 + rand.N(backoff/2+1)
				backoff = min(2*backoff, maxBackoff)
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
			}
			continue
		}
		var msg note
		// A payload that does not parse was not sent by a Gatehouse
		// store; it names nothing to reload.
		if json.Unmarshal([]byte(n.Payload), &msg) != nil || msg.Node == s.node {
			continue
		}
		subtrees := make([]registry.Subtree, 0, len(msg.Names)+1)
		for _, name := range msg.Names {
			if name == legacyZoneName {
				msg.Zone = true
				continue
			}
			subtrees = append(subtrees, registry.GatewaySubtree(name))
		}
		if msg.Zone {
			subtrees = append(subtrees, registry.ZoneSubtree())
		}
		for _, sub := range subtrees {
			select {
			case out <- sub:
			case <-ctx.Done():
				closeConn(conn)
				return
			}
		}
	}
}

// closeConn closes a listener connection without waiting long for a
// server that may be gone.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// The connection is being abandoned; a failed goodbye changes nothing.
	_ = conn.Close(ctx)
}
