// Package pgschema opens a PostgreSQL pool confined to one schema, for the
// packages that keep tables of their own there (the registry's store and
// the cluster's membership): the schema is a startup parameter of every
// connection, and without one the server's current schema is the one used.
//
// It does not create schemas or tables; each caller migrates its own.
package pgschema

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors callers branch on.
var (
	// ErrDSN: the connection string does not parse.
	ErrDSN = errors.New("invalid postgres dsn")
	// ErrNoSchema: no schema was given and the search_path names none
	// that exists.
	ErrNoSchema = errors.New("postgres search_path names no existing schema")
)

// Pool is a connected pool, the config it was made from (for dedicated
// connections such as a LISTEN, which must use the same search_path) and
// the schema its connections use.
type Pool struct {
	*pgxpool.Pool
	Config *pgxpool.Config
	Schema string
}

// Connect parses dsn (a URL or keyword/value string; pgxpool's settings
// such as pool_max_conns apply), sets schema as every connection's
// search_path when it is not empty, caps the pool at maxConns when that is
// above 0, and connects. With an empty schema it reads the current one.
func Connect(ctx context.Context, dsn, schema string, maxConns int32) (*Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDSN, err)
	}
	if schema != "" {
		// A startup parameter rather than a SET after connecting: no
		// extra round trip, and it survives DISCARD ALL.
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	}
	if maxConns > 0 && cfg.MaxConns > maxConns {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect postgres: %w", err)
	}
	if schema == "" {
		var cur *string
		if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&cur); err != nil {
			pool.Close()
			return nil, fmt.Errorf("connect postgres: %w", err)
		}
		if cur == nil {
			pool.Close()
			return nil, ErrNoSchema
		}
		schema = *cur
	}
	return &Pool{Pool: pool, Config: cfg, Schema: schema}, nil
}
