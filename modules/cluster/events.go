package cluster

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Kinds of announced change.
const (
	kindJoin  = "join"  // a node took its row (fresh lease, empty directory share)
	kindLeave = "leave" // a node's row was deleted: it left, or its lease ran out
	kindDir   = "dir"   // a node's directory entries changed
)

// event is the JSON payload of a notification.
type event struct {
	Kind    string   `json:"k"`
	Node    string   `json:"n"`
	Addrs   []string `json:"a,omitempty"`
	Link    string   `json:"l,omitempty"`
	LeaseMS int64    `json:"ms,omitempty"`
	Hold    []string `json:"h,omitempty"`
	Release []string `json:"r,omitempty"`
}

func (ev event) addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(ev.Addrs))
	for _, s := range ev.Addrs {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// errBadEvent: a notification on the cluster's channel that no member
// sent (any role that may NOTIFY can write there); it is ignored.
var errBadEvent = errors.New("malformed cluster event")

// parseEvent decodes and checks a notification payload.
func parseEvent(payload string) (event, error) {
	var ev event
	if err := json.Unmarshal([]byte(payload), &ev); err != nil {
		return event{}, fmt.Errorf("%w: %w", errBadEvent, err)
	}
	ev.Node = strings.ToLower(ev.Node)
	if !validName(ev.Node) {
		return event{}, fmt.Errorf("%w: node name %q", errBadEvent, ev.Node)
	}
	switch ev.Kind {
	case kindJoin:
		if ev.LeaseMS <= 0 || ev.LeaseMS > int64(24*time.Hour/time.Millisecond) {
			return event{}, fmt.Errorf("%w: lease %dms", errBadEvent, ev.LeaseMS)
		}
		for _, a := range ev.Addrs {
			if _, err := netip.ParseAddr(a); err != nil {
				return event{}, fmt.Errorf("%w: address %q", errBadEvent, a)
			}
		}
	case kindLeave:
	case kindDir:
		for _, list := range [][]string{ev.Hold, ev.Release} {
			for i, g := range list {
				if g == "" || len(g) > 253 {
					return event{}, fmt.Errorf("%w: gateway name of %d bytes", errBadEvent, len(g))
				}
				list[i] = strings.ToLower(g)
			}
		}
	default:
		return event{}, fmt.Errorf("%w: kind %q", errBadEvent, ev.Kind)
	}
	return ev, nil
}

// maxPayload keeps a notification under PostgreSQL's 8000-byte limit.
const maxPayload = 7000

// notify announces ev inside tx: it is heard if and only if tx commits,
// and after everything committed before it. A directory change too large
// for one notification is split.
func (m *Member) notify(ctx context.Context, tx pgx.Tx, ev event) error {
	if ev.Kind == kindJoin {
		ev.Link = m.self.LinkAddr
		ev.LeaseMS = m.lease.Milliseconds()
		for _, a := range m.self.PublicAddrs {
			ev.Addrs = append(ev.Addrs, a.String())
		}
	}
	var payloads []string
	if ev.Kind != kindDir {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		payloads = append(payloads, string(b))
	} else {
		cur := event{Kind: kindDir, Node: ev.Node}
		size := 0
		flush := func() error {
			if len(cur.Hold)+len(cur.Release) == 0 {
				return nil
			}
			b, err := json.Marshal(cur)
			if err != nil {
				return err
			}
			payloads = append(payloads, string(b))
			cur.Hold, cur.Release, size = nil, nil, 0
			return nil
		}
		// A name costs its length, quotes and comma; JSON escapes at
		// most double it, so twice the length is a safe bound.
		for _, g := range ev.Hold {
			if size+2*len(g)+3 > maxPayload-300 {
				if err := flush(); err != nil {
					return err
				}
			}
			cur.Hold = append(cur.Hold, g)
			size += 2*len(g) + 3
		}
		for _, g := range ev.Release {
			if size+2*len(g)+3 > maxPayload-300 {
				if err := flush(); err != nil {
					return err
				}
			}
			cur.Release = append(cur.Release, g)
			size += 2*len(g) + 3
		}
		if err := flush(); err != nil {
			return err
		}
	}
	// One statement each: their order is the order they are heard in.
	for _, p := range payloads {
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, m.channel, p); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
	}
	return nil
}

// Reconnection backoff of the listener.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// listen opens the dedicated listening connection.
func (m *Member) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, m.listenCfg)
	if err != nil {
		return nil, fmt.Errorf("listen for cluster changes: %w", err)
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{m.channel}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("listen for cluster changes: %w", err)
	}
	return conn, nil
}

// snapshot loads the whole view on the listening connection, after its
// LISTEN: every change committed later is then both heard and replayed
// over the snapshot in commit order, which ends in the right state since
// each change is idempotent.
func (m *Member) snapshot(ctx context.Context, conn *pgx.Conn) error {
	var ms []member
	var entries [][2]string
	err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if ms, err = readMembers(ctx, tx); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT t.gateway, t.node FROM cluster_tunnels t JOIN cluster_nodes n ON n.name = t.node WHERE n.expires_at > now()`)
		if err != nil {
			return err
		}
		entries, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
			var e [2]string
			err := r.Scan(&e[0], &e[1])
			return e, err
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("load the cluster view: %w", err)
	}
	m.view.replace(ms, entries)
	return nil
}

// querier is a connection, pool or transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readMembers reads the nodes whose lease holds, each with the deadline
// its remaining lease (on the database clock) gives on the local
// monotonic clock. The deadline is counted from before the query, so it
// errs early rather than late.
func readMembers(ctx context.Context, q querier) ([]member, error) {
	start := time.Now()
	rows, err := q.Query(ctx, `SELECT name, public_addrs, link_addr, extract(epoch FROM expires_at - now())::float8
		FROM cluster_nodes WHERE expires_at > now()`)
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (member, error) {
		var mb member
		var addrs []string
		var remaining float64
		if err := r.Scan(&mb.Name, &addrs, &mb.LinkAddr, &remaining); err != nil {
			return mb, err
		}
		for _, s := range addrs {
			if a, err := netip.ParseAddr(s); err == nil {
				mb.PublicAddrs = append(mb.PublicAddrs, a)
			}
		}
		mb.deadline = start.Add(time.Duration(remaining * float64(time.Second)))
		return mb, nil
	})
}

// listenLoop applies announced changes until the member stops, and
// replaces a lost connection (then reloads the whole view, since what was
// committed meanwhile is not replayed).
func (m *Member) listenLoop(conn *pgx.Conn) {
	defer m.wg.Done()
	backoff := minBackoff
	for {
		n, err := conn.WaitForNotification(m.ctx)
		if err == nil {
			ev, err := parseEvent(n.Payload)
			if err != nil {
				m.log.Warn("ignored a cluster notification", "error", err)
				continue
			}
			m.view.apply(ev, time.Now())
			switch ev.Kind {
			case kindJoin:
				m.log.Info("cluster node joined", "member", ev.Node, "link", ev.Link, "addrs", ev.Addrs)
			case kindLeave:
				m.log.Info("cluster node left", "member", ev.Node)
			}
			m.changed()
			continue
		}
		closeConn(conn)
		if m.ctx.Err() != nil {
			return
		}
		m.log.Warn("cluster listener lost its connection", "error", err)
		for {
			// Jitter spreads the reconnections of many nodes after a
			// database restart.
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, maxBackoff)
			select {
			case <-time.After(wait):
			case <-m.ctx.Done():
				return
			}
			ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
			conn, err = m.listen(ctx)
			if err == nil {
				if err = m.snapshot(ctx, conn); err != nil {
					closeConn(conn)
				}
			}
			cancel()
			if err == nil {
				break
			}
			if m.ctx.Err() != nil {
				return
			}
			m.log.Warn("cluster listener cannot reconnect", "error", err)
		}
		backoff = minBackoff
		m.resyncs.Add(1)
		m.log.Info("cluster listener reconnected and reloaded the view")
		m.changed()
	}
}

// closeConn closes a connection without waiting long for a server that
// may be gone.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx) // abandoned either way
}

func randomInt63() int64 {
	var b [8]byte
	_, _ = cryptoRead(b[:])
	return int64(binary.BigEndian.Uint64(b[:]) >> 1)
}

var cryptoRead = crand.Read
