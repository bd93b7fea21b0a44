package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// gatewayWriteCols are the stored columns of a gateway, in gatewayArgs
// order; name is ?1 so that the UPDATE can reuse the same arguments.
const gatewayWriteCols = `name, token_hash, mode, description, account_id, email_verified,
	verify_token_hash, verify_expires, reclaim_token_hash, reclaim_expires,
	last_ping, public_v4, public_v6, local_addrs, expired, created, disabled, allow_from`

const insertGatewaySQL = `INSERT INTO gateways (` + gatewayWriteCols + `)
	VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
	ON CONFLICT (name) DO NOTHING`

const updateGatewaySQL = `UPDATE gateways SET token_hash = ?2, mode = ?3, description = ?4,
	account_id = ?5, email_verified = ?6, verify_token_hash = ?7, verify_expires = ?8,
	reclaim_token_hash = ?9, reclaim_expires = ?10, last_ping = ?11, public_v4 = ?12,
	public_v6 = ?13, local_addrs = ?14, expired = ?15, created = ?16, disabled = ?17, allow_from = ?18
	WHERE name = ?1`

func gatewayArgs(g *registry.Gateway, accountID int64) []any {
	var account any
	if accountID != 0 {
		account = accountID
	}
	return []any{g.Name, bytesArg(g.TokenHash), string(g.Mode), g.Description, account,
		boolArg(g.EmailVerified), bytesArg(g.VerifyTokenHash), timeArg(g.VerifyExpires),
		bytesArg(g.ReclaimTokenHash), timeArg(g.ReclaimExpires), timeArg(g.LastPing),
		addrArg(g.PublicV4), addrArg(g.PublicV6), listArg(g.LocalAddrs), boolArg(g.Expired),
		g.Created.UnixNano(), boolArg(g.Disabled), listArg(g.AllowFrom)}
}

// pingReturning lists what both ping statements return: the gateway in
// gatewayCols order, then whether it was expired. RETURNING sees only the
// new row, hence the revived column (see the migration) and the account
// subqueries.
const pingReturning = `RETURNING name, token_hash, mode, description, account_id,
		(SELECT email FROM accounts WHERE accounts.id = gateways.account_id),
		(SELECT optout FROM accounts WHERE accounts.id = gateways.account_id),
		email_verified, verify_token_hash, verify_expires, reclaim_token_hash, reclaim_expires,
		last_ping, public_v4, public_v6, local_addrs, expired, created, disabled, allow_from, revived`

// pingSameSQL is the usual ping: the gateway reports the public addresses
// it is stored with. It leaves the address columns out of SET because
// SQLite rewrites the entries of every index whose columns are SET, even to
// the same value, and that extra dirty page per ping would double the WAL
// written by each batch. When the addresses moved (or the token is
// unknown) it matches nothing and pingMovedSQL follows.
const pingSameSQL = `UPDATE gateways SET
		last_ping = ?1,
		local_addrs = CASE WHEN ?4 THEN ?5 ELSE local_addrs END,
		revived = expired,
		expired = 0
	WHERE token_hash = ?6
		AND (?2 IS NULL OR public_v4 IS ?2)
		AND (?3 IS NULL OR public_v6 IS ?3)
	` + pingReturning

// pingMovedSQL is the ping that also stores new public addresses; a zero
// address in the request keeps the stored one.
const pingMovedSQL = `UPDATE gateways SET
		last_ping = ?1,
		public_v4 = coalesce(?2, public_v4),
		public_v6 = coalesce(?3, public_v6),
		local_addrs = CASE WHEN ?4 THEN ?5 ELSE local_addrs END,
		revived = expired,
		expired = 0
	WHERE token_hash = ?6
	` + pingReturning

// CreateGateway inserts g, finding or creating the account of email in the
// same transaction. A zero g.Created is set to now.
func (s *Store) CreateGateway(ctx context.Context, g *registry.Gateway, email string) error {
	created := g.Created
	if created.IsZero() {
		created = time.Now().UTC()
	}
	accountID, optOut := g.AccountID, g.OptOut
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := reservedInTx(ctx, tx, g.Name); err != nil {
			return err
		}
		if email != "" {
			var err error
			if accountID, optOut, err = ensureAccount(ctx, tx, email); err != nil {
				return err
			}
		}
		row := *g
		row.Created = created
		res, err := tx.ExecContext(ctx, insertGatewaySQL, gatewayArgs(&row, accountID)...)
		if err != nil {
			return fmt.Errorf("insert gateway %s: %w", g.Name, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("insert gateway %s: %w", g.Name, err)
		} else if n == 0 {
			return fmt.Errorf("%w: %s", registry.ErrNameTaken, g.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// g changes only once the row exists, so a failed call leaves the
	// caller's value as it was.
	g.Created = created
	if email != "" {
		g.AccountID, g.Email, g.OptOut = accountID, email, optOut
	}
	return nil
}

// ensureAccount returns the account of email, creating it if needed.
func ensureAccount(ctx context.Context, tx *sql.Tx, email string) (id int64, optOut bool, err error) {
	err = tx.QueryRowContext(ctx, `SELECT id, optout FROM accounts WHERE email = ?`, email).Scan(&id, &optOut)
	if err == nil {
		return id, optOut, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("find account: %w", err)
	}
	err = tx.QueryRowContext(ctx, `INSERT INTO accounts (email, optout, created) VALUES (?, 0, ?) RETURNING id`,
		email, time.Now().UnixNano()).Scan(&id)
	if err != nil {
		return 0, false, fmt.Errorf("create account: %w", err)
	}
	return id, false, nil
}

// Gateway returns the named gateway with its account.
func (s *Store) Gateway(ctx context.Context, name string) (*registry.Gateway, error) {
	return scanGateway(s.reader.QueryRowContext(ctx, `SELECT `+gatewayCols+` FROM `+gatewayFrom+` WHERE g.name = ?`, name))
}

// GatewayByToken finds a gateway by its token hash.
func (s *Store) GatewayByToken(ctx context.Context, tokenHash []byte) (*registry.Gateway, error) {
	return s.gatewayByHash(ctx, "token_hash", tokenHash)
}

// GatewayByReclaimToken finds a gateway by its reclamation token hash.
func (s *Store) GatewayByReclaimToken(ctx context.Context, hash []byte) (*registry.Gateway, error) {
	return s.gatewayByHash(ctx, "reclaim_token_hash", hash)
}

// GatewayByVerifyToken finds a gateway by its email verification token hash.
func (s *Store) GatewayByVerifyToken(ctx context.Context, hash []byte) (*registry.Gateway, error) {
	return s.gatewayByHash(ctx, "verify_token_hash", hash)
}

// gatewayByHash looks a gateway up by one of the hash columns (a constant
// chosen by the caller, never user input).
func (s *Store) gatewayByHash(ctx context.Context, column string, hash []byte) (*registry.Gateway, error) {
	if len(hash) == 0 {
		// An empty hash is stored as NULL and must never match.
		return nil, registry.ErrNotFound
	}
	return scanGateway(s.reader.QueryRowContext(ctx, `SELECT `+gatewayCols+` FROM `+gatewayFrom+` WHERE g.`+column+` = ?`, hash))
}

// UpdateGateway reads the gateway, lets fn change it and writes it back,
// all under the writer's lock. fn runs while every other writer waits, so it
// must be quick and must not call the store's write methods.
func (s *Store) UpdateGateway(ctx context.Context, name string, fn func(g *registry.Gateway) (*string, error)) (*registry.Gateway, error) {
	var out *registry.Gateway
	err := s.write(ctx, func(tx *sql.Tx) error {
		sel := `SELECT ` + gatewayCols + ` FROM ` + gatewayFrom + ` WHERE g.name = ?`
		g, err := scanGateway(tx.QueryRowContext(ctx, sel, name))
		if err != nil {
			return err
		}
		email, err := fn(g)
		if err != nil {
			return err
		}
		if g.Name != name {
			return fmt.Errorf("update gateway %s: the name cannot change (to %q)", name, g.Name)
		}
		if email != nil {
			g.AccountID = 0
			if *email != "" {
				if g.AccountID, _, err = ensureAccount(ctx, tx, *email); err != nil {
					return err
				}
			}
		}
		if _, err := tx.ExecContext(ctx, updateGatewaySQL, gatewayArgs(g, g.AccountID)...); err != nil {
			return fmt.Errorf("update gateway %s: %w", name, err)
		}
		// Read back, so that the account fields match what was linked.
		out, err = scanGateway(tx.QueryRowContext(ctx, sel, name))
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetAccountOptOut updates the opt-out flag of an account.
func (s *Store) SetAccountOptOut(ctx context.Context, accountID int64, optOut bool) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE accounts SET optout = ? WHERE id = ?`, boolArg(optOut), accountID)
		return affectedOne(res, err, fmt.Sprintf("account %d", accountID))
	})
}

// DeleteGateway removes the gateway; its records go with it (ON DELETE
// CASCADE).
func (s *Store) DeleteGateway(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM gateways WHERE name = ?`, name)
		return affectedOne(res, err, "gateway "+name)
	})
}

// affectedOne turns the outcome of a statement that targets one row into
// nil, registry.ErrNotFound, or the wrapped error.
func affectedOne(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, registry.ErrNotFound)
	}
	return nil
}

// PingBatch applies the pings in one transaction, with prepared UPDATE ...
// RETURNING statements: one per ping when its addresses did not change, a
// second when they did or the token is unknown. If the transaction fails,
// every result carries its error. It runs below database/sql (pingBatchRaw).
func (s *Store) PingBatch(ctx context.Context, pings []registry.PingRequest) []registry.PingResult {
	results := make([]registry.PingResult, len(pings))
	if err := s.pingBatchRaw(ctx, pings, results); err != nil {
		for i := range results {
			results[i] = registry.PingResult{Err: err}
		}
	}
	return results
}

// ExpireSilent marks silent gateways expired and clears their addresses.
// It scans the table: an index on last_ping would be rewritten by every
// ping, the hot path, only to speed up the periodic sweep.
func (s *Store) ExpireSilent(ctx context.Context, cutoff time.Time) ([]string, error) {
	var names []string
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE gateways
			SET expired = 1, revived = 0, public_v4 = NULL, public_v6 = NULL, local_addrs = NULL
			WHERE expired = 0 AND coalesce(last_ping, created) < ?
			RETURNING name`, cutoff.UnixNano())
		if err != nil {
			return fmt.Errorf("expire: %w", err)
		}
		names, err = scanStrings(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// GatewaysByPublicIP lists the live gateways last seen at ip, by name.
func (s *Store) GatewaysByPublicIP(ctx context.Context, ip netip.Addr) ([]*registry.Gateway, error) {
	if !ip.IsValid() {
		return nil, nil
	}
	ip = ip.Unmap()
	column := "public_v6"
	if ip.Is4() {
		column = "public_v4"
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+gatewayCols+` FROM `+gatewayFrom+`
		WHERE g.`+column+` = ? AND g.expired = 0 ORDER BY g.name`, ip.String())
	if err != nil {
		return nil, fmt.Errorf("gateways by ip: %w", err)
	}
	defer rows.Close()
	return registry.CollectRows(rows, "gateways by ip", scanGateway)
}

// ForEachGateway streams every gateway with its records, by name, from one
// query, so the whole walk sees a single snapshot.
func (s *Store) ForEachGateway(ctx context.Context, fn func(g *registry.Gateway, recs []registry.Record) error) error {
	rows, err := s.reader.QueryContext(ctx, `SELECT `+gatewayCols+`,
			r.id, r.owner, r.type, r.value, r.ttl_seconds, r.created
		FROM `+gatewayFrom+` LEFT JOIN records r ON r.gateway = g.name
		ORDER BY g.name, r.created, r.id`)
	if err != nil {
		return fmt.Errorf("list gateways: %w", err)
	}
	defer rows.Close()
	var (
		cur  *registry.Gateway
		recs []registry.Record
	)
	for rows.Next() {
		var (
			r   gatewayRow
			id  sql.NullInt64
			rec recordRow
		)
		if err := rows.Scan(append(r.dest(), &id, &rec.owner, &rec.rtype, &rec.value, &rec.ttl, &rec.created)...); err != nil {
			return fmt.Errorf("list gateways: %w", err)
		}
		if cur == nil || cur.Name != r.name {
			if cur != nil {
				if err := fn(cur, recs); err != nil {
					return err
				}
			}
			if cur, err = r.gateway(); err != nil {
				return err
			}
			recs = nil
		}
		if id.Valid {
			recs = append(recs, rec.record(registry.GatewaySubtree(cur.Name)))
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list gateways: %w", err)
	}
	if cur != nil {
		return fn(cur, recs)
	}
	return nil
}

// CountGateways returns the number of registered gateways.
func (s *Store) CountGateways(ctx context.Context) (int, error) {
	var n int
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM gateways`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count gateways: %w", err)
	}
	return n, nil
}

// scanStrings reads and closes a one-column result.
func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
