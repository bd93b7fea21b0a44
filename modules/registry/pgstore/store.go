// Package pgstore is the shared registry.Store: PostgreSQL through a pgx
// connection pool, for several Gatehouse nodes that serve one registry.
//
// Every write transaction announces the gateways it changed with
// pg_notify, so the announcement is delivered if and only if the change
// commits; Changes listens on a dedicated connection and hands other nodes'
// announcements to the caller, which keeps its in-memory indexes in step.
//
// A single-node deployment does not need it: sqlitestore is the embedded
// default.
package pgstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse-project/gatehouse/internal/pgschema"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Option configures Open.
type Option func(*options)

type options struct {
	schema string
}

// WithSchema keeps the registry's tables in the named schema, created if
// missing, instead of the first schema of the connection's search_path.
// Every pooled connection gets it as its search_path. Tests use it to
// isolate themselves; deployments to share a database with other programs.
func WithSchema(name string) Option {
	return func(o *options) { o.schema = name }
}

// Store is a registry.Store backed by PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	// listenConfig connects the dedicated LISTEN connections; the pool
	// cannot lend one, since a listening session must outlive any query.
	listenConfig *pgx.ConnConfig
	// channel is the notification channel of this schema's registry.
	channel string
	// node identifies this Store in its notifications, so it can skip
	// its own.
	node string

	// stop ends the Changes listeners when the store closes; listeners
	// counts them so Close can wait; closed refuses new ones.
	stop      context.Context
	cancel    context.CancelFunc
	listeners sync.WaitGroup
	mu        sync.Mutex
	closed    bool
}

var _ registry.Store = (*Store)(nil)

// Open connects a pool to the database at dsn (a PostgreSQL URL or
// keyword/value string; pool_max_conns and the other pgxpool settings
// apply) and brings the schema up to date.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	p, err := pgschema.Connect(ctx, dsn, o.schema, 0)
	if errors.Is(err, pgschema.ErrNoSchema) {
		return nil, fmt.Errorf("%w; use WithSchema", err)
	}
	if err != nil {
		return nil, err
	}
	pool, cfg, schema := p.Pool, p.Config, p.Schema
	if err := migrate(ctx, pool, schema, migrations); err != nil {
		pool.Close()
		return nil, err
	}
	var node [8]byte
	if _, err := rand.Read(node[:]); err != nil {
		pool.Close()
		return nil, fmt.Errorf("node id: %w", err)
	}
	s := &Store{
		pool:         pool,
		listenConfig: cfg.ConnConfig.Copy(),
		channel:      channelName(schema),
		node:         hex.EncodeToString(node[:]),
	}
	s.listenConfig.RuntimeParams["application_name"] = "gatehouse-changes-" + s.node
	s.stop, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// channelName is the notification channel of a schema's registry, so that
// registries in different schemas of one database do not hear each other.
// Channel names are identifiers, at most 63 bytes.
func channelName(schema string) string {
	c := "gatehouse:" + schema
	if len(c) > 63 {
		h := sha256.Sum256([]byte(schema))
		c = "gatehouse:" + hex.EncodeToString(h[:16])
	}
	return c
}

// Close stops the Changes listeners and closes the pool.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.listeners.Wait()
	s.pool.Close()
	return nil
}

// write runs fn in one transaction and commits it, or rolls it back when
// fn fails.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		// The rollback runs even when ctx is done; its own failure
		// means a broken connection, which the pool then discards, and
		// fn's error is the one that matters.
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// note is the payload of a change notification.
type note struct {
	Node  string   `json:"node"`
	Names []string `json:"names"`
	// Zone is set when the zone's own records changed: a flag rather
	// than a reserved name, since the zone's subtree has none.
	Zone bool `json:"zone,omitempty"`
}

// maxPayload keeps a notification under PostgreSQL's 8000-byte limit.
const maxPayload = 7000

// notifySubtrees announces, inside tx, that the subtrees changed.
func (s *Store) notifySubtrees(ctx context.Context, tx pgx.Tx, subtrees ...registry.Subtree) error {
	var names []string
	for _, sub := range subtrees {
		if sub.IsZone() {
			if err := s.notifyZone(ctx, tx); err != nil {
				return err
			}
		} else if name, ok := sub.Gateway(); ok {
			names = append(names, name)
		}
	}
	return s.notify(ctx, tx, names...)
}

// notifyZone announces, inside tx, that the zone's own records changed.
func (s *Store) notifyZone(ctx context.Context, tx pgx.Tx) error {
	b, err := json.Marshal(note{Node: s.node, Zone: true})
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, string(b)); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// notify announces, inside tx, that the named gateways changed. The
// notifications are sent only if tx commits.
func (s *Store) notify(ctx context.Context, tx pgx.Tx, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	var payloads []string
	n := note{Node: s.node}
	size := 0
	flush := func() error {
		b, err := json.Marshal(n)
		if err != nil {
			return err
		}
		payloads = append(payloads, string(b))
		n.Names, size = nil, 0
		return nil
	}
	for _, name := range names {
		// A name costs its length plus quotes, comma and escapes; names
		// are DNS labels, so doubling is a generous bound.
		if size+2*len(name)+3 > maxPayload-len(n.Node)-32 && len(n.Names) > 0 {
			if err := flush(); err != nil {
				return fmt.Errorf("notify: %w", err)
			}
		}
		n.Names = append(n.Names, name)
		size += 2*len(name) + 3
	}
	if err := flush(); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, s.channel, payloads); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}
