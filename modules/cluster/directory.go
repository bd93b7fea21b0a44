package cluster

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// directory is this node's share of the tunnel directory: the gateways it
// holds (the desired state, republished if its row was ever reaped) and the
// changes not yet written.
type directory struct {
	mu      sync.Mutex
	held    map[string]struct{}
	pending map[string]bool // gateway -> held (true) or released (false)
	// queued counts Hold and Release calls, flushed the count written;
	// flushedCh is closed (and replaced) whenever flushed advances.
	queued, flushed uint64
	flushedCh       chan struct{}
	kick            chan struct{}
	// write serializes this node's directory writes (batches and the
	// republication after a rejoin).
	write sync.Mutex
}

func (d *directory) init() {
	d.held = make(map[string]struct{})
	d.pending = make(map[string]bool)
	d.flushedCh = make(chan struct{})
	d.kick = make(chan struct{}, 1)
}

// Hold records that this node holds a tunnel of gateway. It never waits:
// the change is written with others in one transaction, and every member
// (this one included) sees it once committed, normally within
// milliseconds; Sync waits for it.
func (m *Member) Hold(gateway string) { m.mark(strings.ToLower(gateway), true) }

// Release records that this node no longer holds a tunnel of gateway.
// Like Hold it never waits.
func (m *Member) Release(gateway string) { m.mark(strings.ToLower(gateway), false) }

func (m *Member) mark(gateway string, hold bool) {
	if gateway == "" || len(gateway) > 253 {
		return
	}
	d := &m.dir
	d.mu.Lock()
	if hold {
		d.held[gateway] = struct{}{}
	} else {
		delete(d.held, gateway)
	}
	d.pending[gateway] = hold
	d.queued++
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Held lists the gateways this node has said it holds, sorted.
func (m *Member) Held() []string {
	m.dir.mu.Lock()
	defer m.dir.mu.Unlock()
	return slices.Sorted(maps.Keys(m.dir.held))
}

// Sync waits until every Hold and Release called before it is committed.
func (m *Member) Sync(ctx context.Context) error {
	d := &m.dir
	d.mu.Lock()
	want := d.queued
	for d.flushed < want {
		ch := d.flushedCh
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-m.ctx.Done():
			return ErrClosed
		}
		d.mu.Lock()
	}
	d.mu.Unlock()
	return nil
}

// writeLoop writes the pending changes, all that gathered while the
// previous transaction ran in one go: many gateways connecting at once
// cost a few round trips, not one each.
func (m *Member) writeLoop() {
	defer m.wg.Done()
	d := &m.dir
	backoff := minBackoff
	for {
		select {
		case <-d.kick:
		case <-m.ctx.Done():
			return
		}
		d.mu.Lock()
		batch, gen := d.pending, d.queued
		d.pending = make(map[string]bool)
		d.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		if err := m.writeBatch(batch); err != nil {
			if m.ctx.Err() != nil {
				return
			}
			m.log.Warn("cluster directory write failed; retrying", "error", err, "changes", len(batch))
			// Put the batch back under any newer change of the same
			// gateway, and try again after a pause.
			d.mu.Lock()
			for g, hold := range batch {
				if _, newer := d.pending[g]; !newer {
					d.pending[g] = hold
				}
			}
			d.mu.Unlock()
			select {
			case <-time.After(backoff):
			case <-m.ctx.Done():
				return
			}
			backoff = min(2*backoff, maxBackoff)
			select {
			case d.kick <- struct{}{}:
			default:
			}
			continue
		}
		backoff = minBackoff
		d.mu.Lock()
		if gen > d.flushed {
			d.flushed = gen
			close(d.flushedCh)
			d.flushedCh = make(chan struct{})
		}
		d.mu.Unlock()
	}
}

// writeBatch writes one batch of changes and announces it.
func (m *Member) writeBatch(batch map[string]bool) error {
	var hold, release []string
	for g, h := range batch {
		if h {
			hold = append(hold, g)
		} else {
			release = append(release, g)
		}
	}
	slices.Sort(hold)
	slices.Sort(release)
	m.dir.write.Lock()
	defer m.dir.write.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	m.batches.Add(1)
	return pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		// Entries are written only while this incarnation owns its row:
		// a reaped node republishes everything when it rejoins.
		if len(hold) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO cluster_tunnels (gateway, node)
				SELECT g, $1 FROM unnest($3::text[]) AS g
				WHERE EXISTS (SELECT 1 FROM cluster_nodes WHERE name = $1 AND incarnation = $2)
				ON CONFLICT DO NOTHING`, m.self.Name, m.incarnation, hold); err != nil {
				return fmt.Errorf("hold: %w", err)
			}
		}
		if len(release) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM cluster_tunnels WHERE node = $1 AND gateway = ANY($2::text[])`, m.self.Name, release); err != nil {
				return fmt.Errorf("release: %w", err)
			}
		}
		return m.notify(ctx, tx, event{Kind: kindDir, Node: m.self.Name, Hold: hold, Release: release})
	})
}
