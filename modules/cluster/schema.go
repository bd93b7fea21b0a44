package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations take the cluster tables from nothing to the current version.
// They have their own version table, cluster_migrations, because the
// registry (pgstore) may share the schema and numbers its own steps.
// Steps are append-only: a released step is never edited.
var migrations = [][]string{
	1: {
		// incarnation changes each time a process joins under the name,
		// so that a restarted node takes its row over and the heartbeats
		// of a process that lost its name stop renewing it.
		`CREATE TABLE cluster_nodes (
			name         text        PRIMARY KEY,
			incarnation  bigint      NOT NULL,
			public_addrs text[]      NOT NULL,
			link_addr    text        NOT NULL,
			joined       timestamptz NOT NULL DEFAULT now(),
			expires_at   timestamptz NOT NULL
		)`,
		// A node's directory entries live and die with its row: deleting
		// an expired node (any live node reaps it) deletes them.
		`CREATE TABLE cluster_tunnels (
			gateway text        NOT NULL,
			node    text        NOT NULL REFERENCES cluster_nodes(name) ON DELETE CASCADE,
			since   timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (gateway, node)
		)`,
		`CREATE INDEX cluster_tunnels_node ON cluster_tunnels (node)`,
	},
}

// migrate brings schema's cluster tables up to date. An advisory lock
// keyed by the schema serializes nodes that start together.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('gatehouse cluster migrate ' || $1))`, schema); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
			return fmt.Errorf("look for schema: %w", err)
		}
		if !exists {
			// Only when missing: CREATE SCHEMA IF NOT EXISTS needs the
			// database's CREATE privilege even when the schema exists.
			if _, err := tx.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
				return fmt.Errorf("create schema: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+pgx.Identifier{schema, "cluster_migrations"}.Sanitize()+` (
			version integer     PRIMARY KEY,
			applied timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create cluster_migrations: %w", err)
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+pgx.Identifier{schema, "cluster_migrations"}.Sanitize()).Scan(&have); err != nil {
			return fmt.Errorf("read cluster schema version: %w", err)
		}
		if have > len(migrations)-1 {
			return fmt.Errorf("%w: cluster schema version %d is newer than this program's %d", ErrSchema, have, len(migrations)-1)
		}
		for v := have + 1; v < len(migrations); v++ {
			for _, stmt := range migrations[v] {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("cluster schema version %d: %.60s: %w", v, stmt, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO cluster_migrations (version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("record cluster schema version: %w", err)
			}
		}
		return nil
	})
}

// channelName is the notification channel of a schema's cluster, so that
// clusters in different schemas of one database do not hear each other.
// Channel names are identifiers of at most 63 bytes.
func channelName(schema string) string {
	c := "gatehouse_cluster:" + schema
	if len(c) > 63 {
		h := sha256.Sum256([]byte(schema))
		c = "gatehouse_cluster:" + hex.EncodeToString(h[:16])
	}
	return c
}
