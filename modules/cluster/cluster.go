// Package cluster lets several Gatehouse cloud nodes that share one
// PostgreSQL database know each other, and know which node holds which
// gateway's tunnel, with no coordination service beyond PostgreSQL.
//
// Membership is a lease: each node keeps a row in cluster_nodes whose
// expires_at it pushes to now()+Lease every Lease/3, on the database's
// clock. Every node reaps rows whose lease has run out, and in the
// meantime ignores them: a node's remaining lease is read as a duration
// from the database and counted down on the local monotonic clock, so
// clock skew between nodes does not matter.
//
// The tunnel directory (cluster_tunnels) says which nodes hold each
// gateway's sessions. Its rows reference their node's row with ON DELETE
// CASCADE, so a dead node's entries vanish with its lease, and readers
// ignore the entries of nodes whose lease has run out before that.
//
// Every change is announced with pg_notify inside the transaction that
// makes it, so it is heard if and only if it commits. Each Member keeps
// the whole picture in memory, fed by those notifications (and a full
// reload after a lost connection), so Nodes and Holders never wait on the
// database. The package knows nothing of Caddy, tunnels or DNS: the cloud
// node wires it in.
package cluster

import (
	"context"
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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse-project/gatehouse/internal/pgschema"
)

// Sentinel errors; the package's errors wrap them.
var (
	// ErrInvalid: Self or Options cannot be used.
	ErrInvalid = errors.New("invalid cluster configuration")
	// ErrClosed: the member has left the cluster.
	ErrClosed = errors.New("cluster member closed")
	// ErrSchema: the database's cluster tables are from a newer program.
	ErrSchema = errors.New("cluster schema")
)

// DefaultLease is the lease of Options{}: a node that stops heartbeating
// is out of every member's view this long after its last heartbeat.
const DefaultLease = 6 * time.Second

// minLease keeps heartbeats (every Lease/3) from hammering the database.
const minLease = 300 * time.Millisecond

// Self describes the joining node.
type Self struct {
	// Name identifies the node in the cluster and in its link
	// certificate: a DNS name (letters, digits, hyphens, dots), compared
	// case-insensitively. A node restarted with the same name takes its
	// place over.
	Name string
	// PublicAddrs are the addresses clients reach the node on, for DNS.
	PublicAddrs []netip.Addr
	// LinkAddr is the host:port other nodes dial for the node-to-node link.
	LinkAddr string
}

// Node is a live member as the others see it.
type Node struct {
	Name        string
	PublicAddrs []netip.Addr
	LinkAddr    string
}

func (n Node) clone() Node {
	n.PublicAddrs = slices.Clone(n.PublicAddrs)
	return n
}

// Options tune Join. The zero value is usable.
type Options struct {
	// Lease is how long a node stays a member after its last heartbeat.
	// Default DefaultLease; at least 300ms.
	Lease time.Duration
	// Schema keeps the cluster tables in the named schema (created if
	// missing) instead of the first schema of the DSN's search_path.
	Schema string
	// Logger receives joins, departures, expiries and database trouble.
	// Nil discards them.
	Logger *slog.Logger
}

// Member is this node's membership: its heartbeat, its share of the tunnel
// directory, and the in-memory view of the cluster. Its methods are safe
// for concurrent use.
type Member struct {
	self        Node
	lease       time.Duration
	incarnation int64
	log         *slog.Logger
	pool        *pgxpool.Pool
	listenCfg   *pgx.ConnConfig
	channel     string

	// view is the in-memory picture the readers use.
	view view

	// dir is this node's share of the directory, written in batches.
	dir directory

	subMu sync.Mutex
	subs  map[chan struct{}]struct{}

	stop     context.CancelFunc
	ctx      context.Context
	wg       sync.WaitGroup
	closeMu  sync.Mutex
	closed   bool
	poolOnce sync.Once

	batches, resyncs atomic.Uint64
}

// Stats are a member's figures, for metrics.
type Stats struct {
	// Nodes is the number of live members, this one included.
	Nodes int
	// Held is the number of gateways this node holds.
	Held int
	// Batches counts directory write transactions (each carries every
	// Hold and Release gathered meanwhile).
	Batches uint64
	// Resyncs counts full reloads after the listener lost its connection.
	Resyncs uint64
}

// Stats returns the member's figures.
func (m *Member) Stats() Stats {
	m.dir.mu.Lock()
	held := len(m.dir.held)
	m.dir.mu.Unlock()
	return Stats{Nodes: len(m.Nodes()), Held: held, Batches: m.batches.Load(), Resyncs: m.resyncs.Load()}
}

// Join makes self a member of the cluster in the database at dsn (a
// PostgreSQL URL or keyword/value string): it creates the cluster tables
// if missing, takes over self.Name's row (a restarted node), loads the
// view and starts the heartbeat, the directory writer and the listener.
// Close leaves the cluster.
func Join(ctx context.Context, dsn string, self Self, opts Options) (*Member, error) {
	if err := checkSelf(self); err != nil {
		return nil, err
	}
	lease := opts.Lease
	if lease == 0 {
		lease = DefaultLease
	}
	if lease < minLease {
		return nil, fmt.Errorf("%w: lease %v below %v", ErrInvalid, lease, minLease)
	}
	// Heartbeat, directory writer and reloads: a few connections do.
	p, err := pgschema.Connect(ctx, dsn, opts.Schema, 4)
	switch {
	case errors.Is(err, pgschema.ErrNoSchema):
		return nil, fmt.Errorf("%w: %w; set Options.Schema", ErrInvalid, err)
	case errors.Is(err, pgschema.ErrDSN):
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	case err != nil:
		return nil, err
	}
	pool, cfg, schema := p.Pool, p.Config, p.Schema
	if err := migrate(ctx, pool, schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cluster schema %s: %w", schema, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Member{
		self:        Node{Name: strings.ToLower(self.Name), PublicAddrs: slices.Clone(self.PublicAddrs), LinkAddr: self.LinkAddr},
		lease:       lease,
		incarnation: randomInt63(),
		log:         log.With("node", strings.ToLower(self.Name)),
		pool:        pool,
		listenCfg:   cfg.ConnConfig.Copy(),
		channel:     channelName(schema),
		subs:        make(map[chan struct{}]struct{}),
	}
	m.listenCfg.RuntimeParams["application_name"] = "gatehouse-cluster-" + m.self.Name
	m.view.init()
	m.dir.init()
	m.ctx, m.stop = context.WithCancel(context.Background())

	// Listen before taking the row, so that this node's own join is the
	// first thing the view hears after its snapshot.
	conn, err := m.listen(ctx)
	if err != nil {
		pool.Close()
		return nil, err
	}
	if err := m.register(ctx); err != nil {
		closeConn(conn)
		pool.Close()
		return nil, err
	}
	if err := m.snapshot(ctx, conn); err != nil {
		closeConn(conn)
		m.leave()
		pool.Close()
		return nil, err
	}
	m.wg.Add(3)
	go m.listenLoop(conn)
	go m.heartbeatLoop()
	go m.writeLoop()
	m.log.Info("joined the cluster", "lease", lease, "link", self.LinkAddr)
	return m, nil
}

// checkSelf validates the joining node's description.
func checkSelf(s Self) error {
	if !validName(s.Name) {
		return fmt.Errorf("%w: node name %q is not a DNS name", ErrInvalid, s.Name)
	}
	host, port, err := net.SplitHostPort(s.LinkAddr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%w: link address %q is not host:port", ErrInvalid, s.LinkAddr)
	}
	for _, a := range s.PublicAddrs {
		if !a.IsValid() {
			return fmt.Errorf("%w: invalid public address", ErrInvalid)
		}
	}
	return nil
}

// validName reports whether s is a DNS name of letters, digits and
// hyphens, since it also names the node in its link certificate.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Self is this node.
func (m *Member) Self() Node { return m.self.clone() }

// Nodes lists the live members, this node included while its own lease
// holds, sorted by name. It never waits on the database.
func (m *Member) Nodes() []Node { return m.view.nodes(time.Now()) }

// Node returns the live member called name.
func (m *Member) Node(name string) (Node, bool) {
	return m.view.node(strings.ToLower(name), time.Now())
}

// Peer returns the link address of the live member called name; it makes
// a Member the link package's Peers.
func (m *Member) Peer(name string) (string, bool) {
	n, ok := m.Node(name)
	return n.LinkAddr, ok
}

// Holders lists the live nodes that hold a tunnel of gateway (compared
// case-insensitively), sorted by name. It never waits on the database.
func (m *Member) Holders(gateway string) []Node {
	return m.view.holders(strings.ToLower(gateway), time.Now())
}

// Directory returns the live holders of every gateway some live node
// holds (names sorted), for the operator's view; it never waits on the
// database.
func (m *Member) Directory() map[string][]string { return m.view.directory(time.Now()) }

// HeldCounts returns how many gateways each live node holds, every live
// node included, for the operator's view and metrics.
func (m *Member) HeldCounts() map[string]int { return m.view.heldCounts(time.Now()) }

// Subscribe returns a channel that receives a value after any change of
// Nodes or Holders (a coalescing signal: read the view again on receipt),
// and a function that ends the subscription.
func (m *Member) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.subMu.Lock()
	m.subs[ch] = struct{}{}
	m.subMu.Unlock()
	return ch, func() {
		m.subMu.Lock()
		delete(m.subs, ch)
		m.subMu.Unlock()
	}
}

// changed signals every subscriber without ever blocking.
func (m *Member) changed() {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Close leaves the cluster: it stops the member's goroutines and deletes
// its row, and with it its directory entries, announcing the departure.
func (m *Member) Close() error {
	if !m.halt() {
		// Halted as if killed (tests): the row stays, the pool goes.
		m.poolOnce.Do(m.pool.Close)
		return nil
	}
	err := m.leave()
	m.poolOnce.Do(m.pool.Close)
	m.log.Info("left the cluster")
	return err
}

// halt stops the goroutines without touching the database, as a killed
// process would; it reports whether it was the first call.
func (m *Member) halt() bool {
	m.closeMu.Lock()
	if m.closed {
		m.closeMu.Unlock()
		return false
	}
	m.closed = true
	m.closeMu.Unlock()
	m.stop()
	m.wg.Wait()
	return true
}

// leave deletes this incarnation's row (cascading to its directory
// entries) and announces it.
func (m *Member) leave() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM cluster_nodes WHERE name = $1 AND incarnation = $2`, m.self.Name, m.incarnation)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		return m.notify(ctx, tx, event{Kind: kindLeave, Node: m.self.Name})
	})
	if err != nil {
		return fmt.Errorf("leave the cluster: %w", err)
	}
	return nil
}

// register takes over this node's row for this incarnation, with a fresh
// lease, and drops the directory entries a previous incarnation left.
func (m *Member) register(ctx context.Context) error {
	addrs := make([]string, len(m.self.PublicAddrs))
	for i, a := range m.self.PublicAddrs {
		addrs[i] = a.String()
	}
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO cluster_nodes (name, incarnation, public_addrs, link_addr, expires_at)
			VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
			ON CONFLICT (name) DO UPDATE SET incarnation = excluded.incarnation, public_addrs = excluded.public_addrs,
				link_addr = excluded.link_addr, joined = now(), expires_at = excluded.expires_at`,
			m.self.Name, m.incarnation, addrs, m.self.LinkAddr, m.lease.Seconds()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM cluster_tunnels WHERE node = $1`, m.self.Name); err != nil {
			return err
		}
		return m.notify(ctx, tx, event{Kind: kindJoin, Node: m.self.Name})
	})
	if err != nil {
		return fmt.Errorf("join the cluster: %w", err)
	}
	return nil
}
