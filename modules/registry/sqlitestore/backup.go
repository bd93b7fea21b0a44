package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

var _ registry.BackupStore = (*Store)(nil)

// ForEachAccount calls fn for every account, by address.
func (s *Store) ForEachAccount(ctx context.Context, fn func(registry.Account) error) error {
	rows, err := s.reader.QueryContext(ctx, `SELECT id, email, optout, created FROM accounts ORDER BY email`)
	if err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			a       registry.Account
			created int64
		)
		if err := rows.Scan(&a.ID, &a.Email, &a.OptOut, &created); err != nil {
			return fmt.Errorf("list accounts: %w", err)
		}
		a.Created = time.Unix(0, created).UTC()
		if err := fn(a); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	return nil
}

// importGatewaySQL skips a gateway whose name or token is already stored.
var importGatewaySQL = strings.Replace(insertGatewaySQL, "ON CONFLICT (name) DO NOTHING", "ON CONFLICT DO NOTHING", 1)

// Import inserts the batch in one transaction, keeping rows already there.
func (s *Store) Import(ctx context.Context, b registry.ImportBatch) (registry.Counts, error) {
	var res registry.Counts
	err := s.write(ctx, func(tx *sql.Tx) error {
		res = registry.Counts{}
		count := func(r sql.Result, err error, n *int, what string) error {
			if err != nil {
				return fmt.Errorf("import %s: %w", what, err)
			}
			k, err := r.RowsAffected()
			if err != nil {
				return fmt.Errorf("import %s: %w", what, err)
			}
			*n += int(k)
			return nil
		}
		for _, a := range b.Accounts {
			r, err := tx.ExecContext(ctx, `INSERT INTO accounts (email, optout, created) VALUES (?, ?, ?)
				ON CONFLICT DO NOTHING`, a.Email, boolArg(a.OptOut), a.Created.UnixNano())
			if err := count(r, err, &res.Accounts, "account "+a.Email); err != nil {
				return err
			}
		}
		for _, g := range b.Gateways {
			var accountID int64
			if g.Email != "" {
				err := tx.QueryRowContext(ctx, `SELECT id FROM accounts WHERE email = ?`, g.Email).Scan(&accountID)
				if errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("import gateway %s: account %s: %w", g.Name, g.Email, registry.ErrNotFound)
				}
				if err != nil {
					return fmt.Errorf("import gateway %s: %w", g.Name, err)
				}
			}
			r, err := tx.ExecContext(ctx, importGatewaySQL, gatewayArgs(g, accountID)...)
			if err := count(r, err, &res.Gateways, "gateway "+g.Name); err != nil {
				return err
			}
		}
		for _, rec := range b.Records {
			key, err := subtreeKey(rec.Subtree)
			if err != nil {
				return err
			}
			r, err := tx.ExecContext(ctx, `INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
				VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
				key, rec.Owner, rec.Type, rec.Value, ttlSeconds(rec.TTL), rec.Created.UnixNano())
			if err := count(r, err, &res.Records, "record of "+rec.Subtree.String()); err != nil {
				return err
			}
		}
		for _, name := range b.Reserved {
			r, err := tx.ExecContext(ctx, `INSERT INTO reserved_names (name, created) VALUES (?, ?)
				ON CONFLICT DO NOTHING`, name, time.Now().UnixNano())
			if err := count(r, err, &res.Reserved, "reserved name "+name); err != nil {
				return err
			}
		}
		for _, c := range b.Domains {
			r, err := tx.ExecContext(ctx, `INSERT INTO domain_claims (domain, gateway, created, checked)
				VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`, c.Domain, c.Gateway, c.Created.UnixNano(), c.Checked.UnixNano())
			if err := count(r, err, &res.Domains, "domain "+c.Domain); err != nil {
				return err
			}
		}
		return nil
	})
	return res, err
}

// Counts counts the rows an export would write.
func (s *Store) Counts(ctx context.Context) (registry.Counts, error) {
	var c registry.Counts
	err := s.reader.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM gateways),
		(SELECT count(*) FROM records), (SELECT count(*) FROM reserved_names), (SELECT count(*) FROM domain_claims)`).Scan(
		&c.Accounts, &c.Gateways, &c.Records, &c.Reserved, &c.Domains)
	if err != nil {
		return c, fmt.Errorf("count rows: %w", err)
	}
	return c, nil
}
