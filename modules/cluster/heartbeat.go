package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// heartbeatLoop renews this node's lease every Lease/3, reaps the nodes
// whose lease ran out, reloads the node list, and wakes subscribers when a
// member's deadline passes (a node that died says nothing).
func (m *Member) heartbeatLoop() {
	defer m.wg.Done()
	interval := m.lease / 3
	nextBeat := time.Now().Add(interval)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
		case <-m.ctx.Done():
			return
		}
		now := time.Now()
		if !now.Before(nextBeat) {
			before := m.liveNames(now)
			if err := m.beat(); err != nil && m.ctx.Err() == nil {
				m.log.Warn("cluster heartbeat failed", "error", err)
			}
			nextBeat = now.Add(interval)
			if !slices.Equal(before, m.liveNames(time.Now())) {
				m.changed()
			}
		} else {
			// Woken by a deadline: a member just went out of the view.
			m.changed()
		}
		now = time.Now()
		wake := nextBeat
		if d := m.view.nextDeadline(now); !d.IsZero() && d.Before(wake) {
			// A little after, so that the member is out when read.
			wake = d.Add(time.Millisecond)
		}
		timer.Reset(wake.Sub(now))
	}
}

func (m *Member) liveNames(now time.Time) []string {
	var names []string
	for _, n := range m.view.nodes(now) {
		names = append(names, n.Name)
	}
	return names
}

// errTakenOver: another process joined under this node's name.
var errTakenOver = errors.New("another process took over this node's name")

// beat is one heartbeat transaction.
func (m *Member) beat() error {
	epoch := m.view.getEpoch()
	ctx, cancel := context.WithTimeout(m.ctx, m.lease/2)
	defer cancel()
	var ms []member
	// The directory writer waits for the heartbeat: were the row
	// reaped, a batch committed between a rejoin's reading of the held
	// set and its commit would find no row and write nothing.
	m.dir.write.Lock()
	defer m.dir.write.Unlock()
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE cluster_nodes SET expires_at = now() + make_interval(secs => $3)
			WHERE name = $1 AND incarnation = $2`, m.self.Name, m.incarnation, m.lease.Seconds())
		if err != nil {
			return fmt.Errorf("renew lease: %w", err)
		}
		if tag.RowsAffected() == 0 {
			if err := m.rejoin(ctx, tx); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `DELETE FROM cluster_nodes WHERE expires_at <= now() RETURNING name`)
		if err != nil {
			return fmt.Errorf("reap: %w", err)
		}
		reaped, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("reap: %w", err)
		}
		for _, name := range reaped {
			m.log.Info("reaped a node whose lease ran out", "reaped", name)
			if err := m.notify(ctx, tx, event{Kind: kindLeave, Node: name}); err != nil {
				return err
			}
		}
		ms, err = readMembers(ctx, tx)
		return err
	})
	if err != nil {
		return err
	}
	m.view.setMembers(ms, epoch)
	return nil
}

// rejoin runs when this incarnation's row is gone: the lease ran out (the
// database was unreachable for longer than that) and another node reaped
// it, taking the directory entries along. It takes the row back and
// republishes the gateways this node holds. If another process has taken
// the name, it leaves the row alone.
func (m *Member) rejoin(ctx context.Context, tx pgx.Tx) error {
	addrs := make([]string, len(m.self.PublicAddrs))
	for i, a := range m.self.PublicAddrs {
		addrs[i] = a.String()
	}
	tag, err := tx.Exec(ctx, `INSERT INTO cluster_nodes (name, incarnation, public_addrs, link_addr, expires_at)
		VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) ON CONFLICT (name) DO NOTHING`,
		m.self.Name, m.incarnation, addrs, m.self.LinkAddr, m.lease.Seconds())
	if err != nil {
		return fmt.Errorf("rejoin: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errTakenOver
	}
	m.dir.mu.Lock()
	held := slices.Sorted(maps.Keys(m.dir.held))
	m.dir.mu.Unlock()
	if _, err := tx.Exec(ctx, `INSERT INTO cluster_tunnels (gateway, node) SELECT g, $1 FROM unnest($2::text[]) AS g ON CONFLICT DO NOTHING`,
		m.self.Name, held); err != nil {
		return fmt.Errorf("rejoin: republish: %w", err)
	}
	if err := m.notify(ctx, tx, event{Kind: kindJoin, Node: m.self.Name}); err != nil {
		return err
	}
	if err := m.notify(ctx, tx, event{Kind: kindDir, Node: m.self.Name, Hold: held}); err != nil {
		return err
	}
	m.log.Warn("lease had run out; rejoined the cluster", "gateways", len(held))
	return nil
}
