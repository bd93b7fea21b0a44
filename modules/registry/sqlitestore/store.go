// Package sqlitestore is the embedded registry.Store: one SQLite file in WAL
// mode, through the pure-Go driver modernc.org/sqlite, so a single Gatehouse
// binary needs no database server.
//
// It is for one process. Several processes sharing a registry need the
// PostgreSQL store (pgstore), which announces changes between them; this
// store's Changes returns a nil channel.
//
// Writes go through a single connection that begins every transaction with
// BEGIN IMMEDIATE, so writers queue in Go instead of failing with
// SQLITE_BUSY, and reads use a separate pool that WAL lets run alongside the
// writer.
package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/gatehouse-project/gatehouse/modules/registry"

	// The driver registers itself as "sqlite".
	_ "modernc.org/sqlite"
)

// busyTimeoutMillis bounds how long a connection waits for a lock held by
// another process (a backup, the sqlite3 shell) before failing.
const busyTimeoutMillis = 10000

// Store is a registry.Store backed by one SQLite database file.
type Store struct {
	// writer has exactly one connection: SQLite allows one writer at a
	// time, and queueing in database/sql is cheaper than busy retries.
	writer *sql.DB
	// reader is a pool of read-only connections.
	reader *sql.DB
	// rawSame and rawMoved are PingBatch's UPDATEs, prepared once on the
	// writer's driver connection rawOwner (see pingBatchRaw). Only the
	// holder of the single writer connection touches them.
	rawSame, rawMoved driver.Stmt
	rawOwner          any
}

var _ registry.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path and brings its
// schema up to date. In-memory databases are refused: the writer and the
// readers are separate connections and must see the same file.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.Contains(path, "?") {
		return nil, fmt.Errorf("sqlite store needs a plain file path, got %q", path)
	}
	// NORMAL in WAL mode never corrupts the database; a power cut may
	// lose the last commits, which pings and records tolerate.
	pragmas := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)", busyTimeoutMillis)
	// The writer's page cache (SQLite's default is 2 MiB) holds the
	// gateways table and its token index of a large registry, so that a
	// ping batch finds its pages in memory rather than reading each one
	// back from the file with a system call.
	writer, err := sql.Open("sqlite", path+"?"+pragmas+"&_pragma=cache_size(-65536)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite writer %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)
	// Connect the writer first: it switches the file to WAL, which the
	// readers rely on to run beside it.
	if err := writer.PingContext(ctx); err != nil {
		writer.Close()
		return nil, fmt.Errorf("open sqlite writer %s: %w", path, err)
	}
	if err := migrate(ctx, writer, migrations); err != nil {
		writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}

	reader, err := sql.Open("sqlite", path+"?"+pragmas+"&_query_only=1")
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("open sqlite reader %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)

	return &Store{writer: writer, reader: reader}, nil
}

// Close releases the connections. The store must not be used afterwards.
func (s *Store) Close() error {
	var errs []error
	if conn, err := s.writer.Conn(context.Background()); err == nil {
		errs = append(errs, conn.Raw(func(any) error {
			for _, st := range []driver.Stmt{s.rawSame, s.rawMoved} {
				if st != nil {
					errs = append(errs, st.Close())
				}
			}
			return nil
		}), conn.Close())
	}
	errs = append(errs, s.reader.Close(), s.writer.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite store: %w", err)
	}
	return nil
}

// Changes returns a nil channel: only this process writes the file, so
// there is nobody else's change to hear about.
func (s *Store) Changes(context.Context) (<-chan registry.Subtree, error) { return nil, nil }

// write runs fn in one write transaction and commits it, or rolls it back
// when fn fails.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
