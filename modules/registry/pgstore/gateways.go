package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// gatewayWriteCols are the stored columns of a gateway, in gatewayArgs
// order; name is $1 so that the UPDATE can reuse the same arguments.
const gatewayWriteCols = `name, token_hash, mode, description, account_id, email_verified,
	verify_token_hash, verify_expires, reclaim_token_hash, reclaim_expires,
	last_ping, public_v4, public_v6, local_addrs, expired, created, disabled, allow_from`

const insertGatewaySQL = `INSERT INTO gateways (` + gatewayWriteCols + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
	ON CONFLICT (name) DO NOTHING`

const updateGatewaySQL = `UPDATE gateways SET token_hash = $2, mode = $3, description = $4,
	account_id = $5, email_verified = $6, verify_token_hash = $7, verify_expires = $8,
	reclaim_token_hash = $9, reclaim_expires = $10, last_ping = $11, public_v4 = $12,
	public_v6 = $13, local_addrs = $14, expired = $15, created = $16, disabled = $17, allow_from = $18
	WHERE name = $1`

func gatewayArgs(g *registry.Gateway, accountID int64) []any {
	return []any{g.Name, bytesArg(g.TokenHash), string(g.Mode), g.Description, int64Arg(accountID),
		g.EmailVerified, bytesArg(g.VerifyTokenHash), timeArg(g.VerifyExpires),
		bytesArg(g.ReclaimTokenHash), timeArg(g.ReclaimExpires), timeArg(g.LastPing),
		addrArg(g.PublicV4), addrArg(g.PublicV6), listArg(g.LocalAddrs), g.Expired, g.Created, g.Disabled, listArg(g.AllowFrom)}
}

// pingSQL updates one gateway by token and returns it in gatewayCols order,
// plus whether it was expired. RETURNING sees only the new row, hence the
// revived column (see the migration) and the account subqueries.
const pingSQL = `UPDATE gateways SET
		last_ping = $1,
		public_v4 = coalesce($2, public_v4),
		public_v6 = coalesce($3, public_v6),
		local_addrs = CASE WHEN $4::boolean THEN $5 ELSE local_addrs END,
		revived = expired,
		expired = false
	WHERE token_hash = $6
	RETURNING name, token_hash, mode, description, account_id,
		(SELECT email FROM accounts WHERE accounts.id = gateways.account_id),
		(SELECT optout FROM accounts WHERE accounts.id = gateways.account_id),
		email_verified, verify_token_hash, verify_expires, reclaim_token_hash, reclaim_expires,
		last_ping, public_v4, public_v6, local_addrs, expired, created, disabled, allow_from, revived`

// CreateGateway inserts g, finding or creating the account of email in the
// same transaction. A zero g.Created is set to now.
func (s *Store) CreateGateway(ctx context.Context, g *registry.Gateway, email string) error {
	created := g.Created
	if created.IsZero() {
		// PostgreSQL keeps microseconds; the caller's copy must match.
		created = time.Now().UTC().Truncate(time.Microsecond)
	}
	accountID, optOut := g.AccountID, g.OptOut
	err := s.write(ctx, func(tx pgx.Tx) error {
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
		tag, err := tx.Exec(ctx, insertGatewaySQL, gatewayArgs(&row, accountID)...)
		if err != nil {
			return fmt.Errorf("insert gateway %s: %w", g.Name, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: %s", registry.ErrNameTaken, g.Name)
		}
		return s.notify(ctx, tx, g.Name)
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

// ensureAccount returns the account of email, creating it if needed. A
// concurrent creation of the same account makes the INSERT wait for the
// other transaction and then do nothing, and the SELECT then sees it.
func ensureAccount(ctx context.Context, tx pgx.Tx, email string) (id int64, optOut bool, err error) {
	err = tx.QueryRow(ctx, `INSERT INTO accounts (email, created) VALUES ($1, now())
		ON CONFLICT (email) DO NOTHING RETURNING id`, email).Scan(&id)
	if err == nil {
		return id, false, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("create account: %w", err)
	}
	if err := tx.QueryRow(ctx, `SELECT id, optout FROM accounts WHERE email = $1`, email).Scan(&id, &optOut); err != nil {
		return 0, false, fmt.Errorf("find account: %w", err)
	}
	return id, optOut, nil
}

// Gateway returns the named gateway with its account.
func (s *Store) Gateway(ctx context.Context, name string) (*registry.Gateway, error) {
	return scanGateway(s.pool.QueryRow(ctx, `SELECT `+gatewayCols+` FROM `+gatewayFrom+` WHERE g.name = $1`, name))
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
	return scanGateway(s.pool.QueryRow(ctx, `SELECT `+gatewayCols+` FROM `+gatewayFrom+` WHERE g.`+column+` = $1`, hash))
}

// UpdateGateway locks the gateway's row (SELECT ... FOR UPDATE), lets fn
// change it and writes it back. fn runs while the row is locked, so it must
// be quick.
func (s *Store) UpdateGateway(ctx context.Context, name string, fn func(g *registry.Gateway) (*string, error)) (*registry.Gateway, error) {
	var out *registry.Gateway
	err := s.write(ctx, func(tx pgx.Tx) error {
		sel := `SELECT ` + gatewayCols + ` FROM ` + gatewayFrom + ` WHERE g.name = $1`
		g, err := scanGateway(tx.QueryRow(ctx, sel+` FOR UPDATE OF g`, name))
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
		if _, err := tx.Exec(ctx, updateGatewaySQL, gatewayArgs(g, g.AccountID)...); err != nil {
			return fmt.Errorf("update gateway %s: %w", name, err)
		}
		// Read back, so that the account fields match what was linked.
		if out, err = scanGateway(tx.QueryRow(ctx, sel, name)); err != nil {
			return err
		}
		return s.notify(ctx, tx, name)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetAccountOptOut updates the opt-out flag of an account and announces
// the gateways it owns, whose joined OptOut changed.
func (s *Store) SetAccountOptOut(ctx context.Context, accountID int64, optOut bool) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE accounts SET optout = $1 WHERE id = $2`, optOut, accountID)
		if err != nil {
			return fmt.Errorf("account %d: %w", accountID, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("account %d: %w", accountID, registry.ErrNotFound)
		}
		rows, _ := tx.Query(ctx, `SELECT name FROM gateways WHERE account_id = $1`, accountID)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("gateways of account %d: %w", accountID, err)
		}
		return s.notify(ctx, tx, names...)
	})
}

// DeleteGateway removes the gateway; its records go with it (ON DELETE
// CASCADE).
func (s *Store) DeleteGateway(ctx context.Context, name string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM gateways WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("delete gateway %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("gateway %s: %w", name, registry.ErrNotFound)
		}
		return s.notify(ctx, tx, name)
	})
}

// pingAttempts bounds the retries of a batch that PostgreSQL aborted to
// break a deadlock with another transaction.
const pingAttempts = 3

// PingBatch applies the pings in one transaction: every UPDATE ...
// RETURNING goes to the server in one pipelined batch (one round trip),
// then one notification names all the pinged gateways. The pings are sent
// in token order, so that two batches touching the same gateways lock them
// in the same order. If the transaction fails, every result carries its
// error.
func (s *Store) PingBatch(ctx context.Context, pings []registry.PingRequest) []registry.PingResult {
	results := make([]registry.PingResult, len(pings))
	order := make([]int, 0, len(pings))
	for i, p := range pings {
		if len(p.TokenHash) == 0 {
			results[i].Err = registry.ErrNotFound
			continue
		}
		order = append(order, i)
	}
	if len(order) == 0 {
		return results
	}
	// A stable sort keeps two pings of one gateway in their given order.
	slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(pings[a].TokenHash, pings[b].TokenHash) })
	var err error
	for range pingAttempts {
		if err = s.pingOnce(ctx, pings, order, results); !isDeadlock(err) {
			break
		}
	}
	if err != nil {
		for i := range results {
			results[i] = registry.PingResult{Err: err}
		}
	}
	return results
}

func (s *Store) pingOnce(ctx context.Context, pings []registry.PingRequest, order []int, results []registry.PingResult) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		now := time.Now()
		b := &pgx.Batch{}
		for _, i := range order {
			p := pings[i]
			at := p.At
			if at.IsZero() {
				at = now
			}
			b.Queue(pingSQL, at, addrArg(p.PublicV4), addrArg(p.PublicV6),
				p.LocalAddrs != nil, listArg(p.LocalAddrs), p.TokenHash)
		}
		br := tx.SendBatch(ctx, b)
		names := make([]string, 0, len(order))
		for _, i := range order {
			var r gatewayRow
			var revived bool
			err := br.QueryRow().Scan(append(r.dest(), &revived)...)
			if errors.Is(err, pgx.ErrNoRows) {
				results[i] = registry.PingResult{Err: registry.ErrNotFound}
				continue
			}
			if err != nil {
				br.Close()
				return fmt.Errorf("ping: %w", err)
			}
			g, err := r.gateway()
			results[i] = registry.PingResult{Gateway: g, WasExpired: revived, Err: err}
			names = append(names, r.name)
		}
		if err := br.Close(); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		return s.notify(ctx, tx, names...)
	})
}

// isDeadlock reports whether PostgreSQL aborted the transaction to break
// a deadlock, after which the whole transaction may simply run again.
func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// ExpireSilent marks silent gateways expired and clears their addresses.
// It scans the table: an index on last_ping would be rewritten by every
// ping, the hot path, only to speed up the periodic sweep.
func (s *Store) ExpireSilent(ctx context.Context, cutoff time.Time) ([]string, error) {
	var names []string
	err := s.write(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `UPDATE gateways
			SET expired = true, revived = false, public_v4 = NULL, public_v6 = NULL, local_addrs = NULL
			WHERE NOT expired AND coalesce(last_ping, created) < $1
			RETURNING name`, cutoff)
		var err error
		if names, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return fmt.Errorf("expire: %w", err)
		}
		return s.notify(ctx, tx, names...)
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
	rows, _ := s.pool.Query(ctx, `SELECT `+gatewayCols+` FROM `+gatewayFrom+`
		WHERE g.`+column+` = $1 AND NOT g.expired ORDER BY g.name`, ip.String())
	defer rows.Close()
	return registry.CollectRows(rows, "gateways by ip", scanGateway)
}

// ForEachGateway streams every gateway with its records, by name, from one
// query, so the whole walk sees a single snapshot.
func (s *Store) ForEachGateway(ctx context.Context, fn func(g *registry.Gateway, recs []registry.Record) error) error {
	rows, _ := s.pool.Query(ctx, `SELECT `+gatewayCols+`,
			r.id, r.owner, r.type, r.value, r.ttl_seconds, r.created
		FROM `+gatewayFrom+` LEFT JOIN records r ON r.gateway = g.name
		ORDER BY g.name, r.created, r.id`)
	defer rows.Close()
	var (
		cur  *registry.Gateway
		recs []registry.Record
	)
	for rows.Next() {
		var (
			r   gatewayRow
			rec recordRow
		)
		if err := rows.Scan(append(r.dest(), &rec.id, &rec.owner, &rec.rtype, &rec.value, &rec.ttl, &rec.created)...); err != nil {
			return fmt.Errorf("list gateways: %w", err)
		}
		if cur == nil || cur.Name != r.name {
			if cur != nil {
				if err := fn(cur, recs); err != nil {
					return err
				}
			}
			var err error
			if cur, err = r.gateway(); err != nil {
				return err
			}
			recs = nil
		}
		if rec.id != nil {
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
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM gateways`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count gateways: %w", err)
	}
	return n, nil
}
