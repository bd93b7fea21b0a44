package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// migration is one schema version: the statements that take the previous
// version to this one. Steps are append-only: a released step is never
// edited, because databases in the field already ran it.
type migration struct {
	version int
	stmts   []string
}

// migrations upgrade a database from empty to the current schema, in order.
var migrations = []migration{
	{version: 1, stmts: []string{
		`CREATE TABLE accounts (
			id      INTEGER PRIMARY KEY,
			email   TEXT    NOT NULL UNIQUE,
			optout  INTEGER NOT NULL DEFAULT 0,
			created INTEGER NOT NULL
		)`,
		// Times are UTC unix nanoseconds; NULL stands for the zero time.
		// Hashes are NULL when empty so that the unique indexes only
		// compare real tokens. Addresses are netip text.
		`CREATE TABLE gateways (
			name               TEXT    PRIMARY KEY,
			token_hash         BLOB    UNIQUE,
			mode               TEXT    NOT NULL,
			description        TEXT    NOT NULL DEFAULT '',
			account_id         INTEGER REFERENCES accounts(id),
			email_verified     INTEGER NOT NULL DEFAULT 0,
			verify_token_hash  BLOB,
			verify_expires     INTEGER,
			reclaim_token_hash BLOB,
			reclaim_expires    INTEGER,
			last_ping          INTEGER,
			public_v4          TEXT,
			public_v6          TEXT,
			local_addrs        TEXT,
			expired            INTEGER NOT NULL DEFAULT 0,
			-- revived is 1 when the latest ping found the gateway expired.
			-- A ping copies the old expired flag here in the same UPDATE,
			-- because RETURNING only sees the new row and PingBatch must
			-- report WasExpired without a second statement per ping.
			revived            INTEGER NOT NULL DEFAULT 0,
			created            INTEGER NOT NULL
		)`,
		`CREATE INDEX gateways_verify_token ON gateways(verify_token_hash) WHERE verify_token_hash IS NOT NULL`,
		`CREATE INDEX gateways_reclaim_token ON gateways(reclaim_token_hash) WHERE reclaim_token_hash IS NOT NULL`,
		`CREATE INDEX gateways_account ON gateways(account_id) WHERE account_id IS NOT NULL`,
		`CREATE TABLE records (
			id          INTEGER PRIMARY KEY,
			gateway     TEXT    NOT NULL REFERENCES gateways(name) ON DELETE CASCADE,
			owner       TEXT    NOT NULL,
			type        TEXT    NOT NULL,
			value       TEXT    NOT NULL,
			ttl_seconds INTEGER NOT NULL,
			created     INTEGER NOT NULL
		)`,
		// The unique index both enforces "no identical record twice" and
		// serves every lookup of a gateway's records (its leading column).
		`CREATE UNIQUE INDEX records_identity ON records(gateway, owner, type, value)`,
	}},
	{version: 2, stmts: []string{
		// Discovery by public IP; partial, because most rows of an idle
		// or expired population carry no address.
		`CREATE INDEX gateways_public_v4 ON gateways(public_v4) WHERE public_v4 IS NOT NULL`,
		`CREATE INDEX gateways_public_v6 ON gateways(public_v6) WHERE public_v6 IS NOT NULL`,
		// PruneRecords sweeps stale ACME challenges across all gateways.
		`CREATE INDEX records_prune ON records(owner, type, created)`,
	}},
	{version: 3, stmts: []string{
		// The zone's own records, which belong to no gateway: the
		// operator's ACME challenges at _acme-challenge.ZONE. Few rows,
		// so the identity index serves every lookup.
		`CREATE TABLE zone_records (
			id          INTEGER PRIMARY KEY,
			owner       TEXT    NOT NULL,
			type        TEXT    NOT NULL,
			value       TEXT    NOT NULL,
			ttl_seconds INTEGER NOT NULL,
			created     INTEGER NOT NULL
		)`,
		`CREATE UNIQUE INDEX zone_records_identity ON zone_records(owner, type, value)`,
	}},
	{version: 4, stmts: []string{
		// One records path: the zone's own records move into records,
		// keyed by their subtree, with gateway NULL for the zone (no
		// gateway's name can be NULL, and the foreign key ignores it).
		// SQLite cannot drop a NOT NULL in place, so the table is
		// rebuilt; nothing references records, so the rebuild needs no
		// foreign-key pause.
		`CREATE TABLE records_v4 (
			id          INTEGER PRIMARY KEY,
			gateway     TEXT    REFERENCES gateways(name) ON DELETE CASCADE,
			owner       TEXT    NOT NULL,
			type        TEXT    NOT NULL,
			value       TEXT    NOT NULL,
			ttl_seconds INTEGER NOT NULL,
			created     INTEGER NOT NULL
		)`,
		`INSERT INTO records_v4 (id, gateway, owner, type, value, ttl_seconds, created)
			SELECT id, gateway, owner, type, value, ttl_seconds, created FROM records`,
		`INSERT INTO records_v4 (gateway, owner, type, value, ttl_seconds, created)
			SELECT NULL, owner, type, value, ttl_seconds, created FROM zone_records ORDER BY created, id`,
		`DROP TABLE records`,
		`DROP TABLE zone_records`,
		`ALTER TABLE records_v4 RENAME TO records`,
		`CREATE UNIQUE INDEX records_identity ON records(gateway, owner, type, value)`,
		// NULLs are distinct in a unique index: the zone's subtree needs
		// an identity of its own for "no identical record twice".
		`CREATE UNIQUE INDEX records_zone_identity ON records(owner, type, value) WHERE gateway IS NULL`,
		`CREATE INDEX records_prune ON records(owner, type, created)`,
	}},
	{version: 5, stmts: []string{
		// A gateway's token sealed (AEAD) beside the hash of the token it
		// seals: PageKite's signatures need the token itself. A table of
		// its own, because the row only counts while its token_hash is the
		// gateway's (a reclaimed gateway's old seal is dead) and most
		// reads of a gateway never want it.
		`CREATE TABLE gateway_secrets (
			name       TEXT PRIMARY KEY REFERENCES gateways(name) ON DELETE CASCADE,
			token_hash BLOB NOT NULL,
			sealed     BLOB NOT NULL
		)`,
	}},
	{version: 6, stmts: []string{
		// The operator's switch: a disabled gateway keeps its name but
		// is served nowhere and its token is refused.
		`ALTER TABLE gateways ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0`,
		// Names the operator reserved at run time, beside the configured
		// ones, so that every node and every restart refuses them.
		`CREATE TABLE reserved_names (
			name    TEXT PRIMARY KEY,
			created INTEGER NOT NULL
		)`,
	}},
	{version: 7, stmts: []string{
		// acme-dns's allowfrom: the networks (space-separated CIDR
		// text) from which /update accepts the gateway's token; NULL
		// for any.
		`ALTER TABLE gateways ADD COLUMN allow_from TEXT`,
	}},
	{version: 8, stmts: []string{
		// Custom domains: a name outside the zone, held by at most one
		// gateway (the primary key), gone with its gateway. Times are
		// UTC unix nanoseconds.
		`CREATE TABLE domain_claims (
			domain  TEXT    PRIMARY KEY,
			gateway TEXT    NOT NULL REFERENCES gateways(name) ON DELETE CASCADE,
			created INTEGER NOT NULL,
			checked INTEGER NOT NULL
		)`,
		`CREATE INDEX domain_claims_gateway ON domain_claims(gateway)`,
	}},
}

// currentVersion is the schema version this code reads and writes.
var currentVersion = migrations[len(migrations)-1].version

// migrate applies, one transaction each, every step of steps that db has
// not run yet. A crash between steps leaves a database at a consistent
// older version that the next Open continues from.
func migrate(ctx context.Context, db *sql.DB, steps []migration) error {
	for _, m := range steps {
		if err := migrateStep(ctx, db, m); err != nil {
			return fmt.Errorf("migrate to version %d: %w", m.version, err)
		}
	}
	return nil
}

func migrateStep(ctx context.Context, db *sql.DB, m migration) (err error) {
	// The writer DSN asks for BEGIN IMMEDIATE, so two processes opening
	// the same file serialize here and the version check below is exact.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, rollback(tx))
		}
	}()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		applied INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var have int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if have > currentVersion {
		return fmt.Errorf("database schema version %d is newer than this program's %d", have, currentVersion)
	}
	if have >= m.version {
		return tx.Rollback()
	}
	if have != m.version-1 {
		return fmt.Errorf("database schema version %d cannot go to %d directly", have, m.version)
	}
	for _, s := range m.stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%.60s: %w", s, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied) VALUES (?, ?)`,
		m.version, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("record version: %w", err)
	}
	return tx.Commit()
}

// rollback ends a failed transaction; a transaction already ended by a
// cancelled context is not a second failure.
func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}
