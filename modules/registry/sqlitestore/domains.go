package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// ClaimDomain stores c, or refreshes the check time of the gateway's own
// claim; the holder is read and written in one (IMMEDIATE) transaction.
func (s *Store) ClaimDomain(ctx context.Context, c registry.DomainClaim) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var holder string
		err := tx.QueryRowContext(ctx, `SELECT gateway FROM domain_claims WHERE domain = ?`, c.Domain).Scan(&holder)
		switch {
		case err == nil && holder != c.Gateway:
			return fmt.Errorf("%w: %s", registry.ErrDomainTaken, c.Domain)
		case err == nil:
			_, err = tx.ExecContext(ctx, `UPDATE domain_claims SET checked = ? WHERE domain = ?`, c.Checked.UnixNano(), c.Domain)
			if err != nil {
				return fmt.Errorf("claim %s: %w", c.Domain, err)
			}
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("claim %s: %w", c.Domain, err)
		}
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM gateways WHERE name = ?`, c.Gateway).Scan(&one); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("gateway %s: %w", c.Gateway, registry.ErrNotFound)
			}
			return fmt.Errorf("claim %s: %w", c.Domain, err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO domain_claims (domain, gateway, created, checked) VALUES (?, ?, ?, ?)`,
			c.Domain, c.Gateway, c.Created.UnixNano(), c.Checked.UnixNano())
		if err != nil {
			return fmt.Errorf("claim %s: %w", c.Domain, err)
		}
		return nil
	})
}

// DomainClaims lists the claims of gateway, every claim for "".
func (s *Store) DomainClaims(ctx context.Context, gateway string) ([]registry.DomainClaim, error) {
	q, args := `SELECT domain, gateway, created, checked FROM domain_claims ORDER BY domain`, []any(nil)
	if gateway != "" {
		q, args = `SELECT domain, gateway, created, checked FROM domain_claims WHERE gateway = ? ORDER BY domain`, []any{gateway}
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	defer rows.Close()
	var out []registry.DomainClaim
	for rows.Next() {
		var c registry.DomainClaim
		var created, checked int64
		if err := rows.Scan(&c.Domain, &c.Gateway, &created, &checked); err != nil {
			return nil, fmt.Errorf("list domains: %w", err)
		}
		c.Created, c.Checked = time.Unix(0, created).UTC(), time.Unix(0, checked).UTC()
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	return out, nil
}

// ReleaseDomain removes gateway's claim on domain (every claim for "").
func (s *Store) ReleaseDomain(ctx context.Context, gateway, domain string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if domain == "" {
			_, err := tx.ExecContext(ctx, `DELETE FROM domain_claims WHERE gateway = ?`, gateway)
			if err != nil {
				return fmt.Errorf("release domains of %s: %w", gateway, err)
			}
			return nil
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM domain_claims WHERE gateway = ? AND domain = ?`, gateway, domain)
		if err != nil {
			return fmt.Errorf("release %s: %w", domain, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("domain %s of %s: %w", domain, gateway, registry.ErrNotFound), err)
		}
		return nil
	})
}
