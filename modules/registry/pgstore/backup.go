package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

var _ registry.BackupStore = (*Store)(nil)

// ForEachAccount calls fn for every account, by address.
func (s *Store) ForEachAccount(ctx context.Context, fn func(registry.Account) error) error {
	rows, err := s.pool.Query(ctx, `SELECT id, email, optout, created FROM accounts ORDER BY email`)
	if err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a registry.Account
		if err := rows.Scan(&a.ID, &a.Email, &a.OptOut, &a.Created); err != nil {
			return fmt.Errorf("list accounts: %w", err)
		}
		a.Created = a.Created.UTC()
		if err := fn(a); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	return nil
}

// importGatewaySQL skips a gateway whose name or token is already stored,
// and links the account by address inside the statement ($5 is the
// address here, not an id).
var importGatewaySQL = strings.Replace(
	strings.Replace(insertGatewaySQL, "ON CONFLICT (name) DO NOTHING", "ON CONFLICT DO NOTHING", 1),
	"$5,", "(SELECT id FROM accounts WHERE email = $5::text),", 1)

// Import inserts the batch in one transaction, keeping rows already there.
// The statements go as pipelined batches: one round trip per kind rather
// than per row.
func (s *Store) Import(ctx context.Context, b registry.ImportBatch) (registry.Counts, error) {
	var res registry.Counts
	err := s.write(ctx, func(tx pgx.Tx) error {
		res = registry.Counts{}
		run := func(batch *pgx.Batch, n *int, what func(i int) string) error {
			if batch.Len() == 0 {
				return nil
			}
			br := tx.SendBatch(ctx, batch)
			for i := range batch.Len() {
				tag, err := br.Exec()
				if err != nil {
					br.Close()
					return fmt.Errorf("import %s: %w", what(i), err)
				}
				*n += int(tag.RowsAffected())
			}
			return br.Close()
		}
		var batch pgx.Batch
		for _, a := range b.Accounts {
			batch.Queue(`INSERT INTO accounts (email, optout, created) VALUES ($1, $2, $3)
				ON CONFLICT DO NOTHING`, a.Email, a.OptOut, a.Created)
		}
		if err := run(&batch, &res.Accounts, func(i int) string { return "account " + b.Accounts[i].Email }); err != nil {
			return err
		}
		batch = pgx.Batch{}
		for _, g := range b.Gateways {
			args := gatewayArgs(g, 0)
			args[4] = g.Email
			batch.Queue(importGatewaySQL, args...)
		}
		if err := run(&batch, &res.Gateways, func(i int) string { return "gateway " + b.Gateways[i].Name }); err != nil {
			return err
		}
		// A gateway with an address whose account is missing got a NULL
		// account above; refuse the batch instead of losing the link.
		var emails []string
		for _, g := range b.Gateways {
			if g.Email != "" {
				emails = append(emails, g.Email)
			}
		}
		if len(emails) > 0 {
			var missing string
			err := tx.QueryRow(ctx, `SELECT e FROM unnest($1::text[]) AS e
				WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE email = e) LIMIT 1`, emails).Scan(&missing)
			if err == nil {
				return fmt.Errorf("import: account %s: %w", missing, registry.ErrNotFound)
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("import: check accounts: %w", err)
			}
		}
		batch = pgx.Batch{}
		for _, rec := range b.Records {
			key, err := subtreeKey(rec.Subtree)
			if err != nil {
				return err
			}
			batch.Queue(`INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
				key, rec.Owner, rec.Type, rec.Value, int64(rec.TTL/time.Second), rec.Created)
		}
		if err := run(&batch, &res.Records, func(i int) string { return "record of " + b.Records[i].Subtree.String() }); err != nil {
			return err
		}
		batch = pgx.Batch{}
		for _, name := range b.Reserved {
			batch.Queue(`INSERT INTO reserved_names (name, created) VALUES ($1, now()) ON CONFLICT DO NOTHING`, name)
		}
		if err := run(&batch, &res.Reserved, func(i int) string { return "reserved name " + b.Reserved[i] }); err != nil {
			return err
		}
		batch = pgx.Batch{}
		for _, c := range b.Domains {
			batch.Queue(`INSERT INTO domain_claims (domain, gateway, created, checked)
				VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, c.Domain, c.Gateway, c.Created, c.Checked)
		}
		return run(&batch, &res.Domains, func(i int) string { return "domain " + b.Domains[i].Domain })
	})
	return res, err
}

// Counts counts the rows an export would write.
func (s *Store) Counts(ctx context.Context) (registry.Counts, error) {
	var c registry.Counts
	err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM gateways),
		(SELECT count(*) FROM records), (SELECT count(*) FROM reserved_names), (SELECT count(*) FROM domain_claims)`).Scan(
		&c.Accounts, &c.Gateways, &c.Records, &c.Reserved, &c.Domains)
	if err != nil {
		return c, fmt.Errorf("count rows: %w", err)
	}
	return c, nil
}
