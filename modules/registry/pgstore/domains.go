package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// ClaimDomain stores c, or refreshes the check time of the gateway's own
// claim. The INSERT decides between concurrent claimers (the primary
// key); the gateway's subtree is announced, so that other nodes reload
// its domains.
func (s *Store) ClaimDomain(ctx context.Context, c registry.DomainClaim) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		var holder string
		err := tx.QueryRow(ctx, `INSERT INTO domain_claims AS d (domain, gateway, created, checked)
			SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM gateways WHERE name = $2)
			ON CONFLICT (domain) DO UPDATE SET checked = excluded.checked WHERE d.gateway = excluded.gateway
			RETURNING gateway`, c.Domain, c.Gateway, c.Created, c.Checked).Scan(&holder)
		if errors.Is(err, pgx.ErrNoRows) {
			// Nothing inserted or updated: an unknown gateway, or the
			// domain is another's.
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM gateways WHERE name = $1)`, c.Gateway).Scan(&exists); err != nil {
				return fmt.Errorf("claim %s: %w", c.Domain, err)
			}
			if !exists {
				return fmt.Errorf("gateway %s: %w", c.Gateway, registry.ErrNotFound)
			}
			return fmt.Errorf("%w: %s", registry.ErrDomainTaken, c.Domain)
		}
		if err != nil {
			return fmt.Errorf("claim %s: %w", c.Domain, err)
		}
		return s.notify(ctx, tx, c.Gateway)
	})
}

// DomainClaims lists the claims of gateway, every claim for "".
func (s *Store) DomainClaims(ctx context.Context, gateway string) ([]registry.DomainClaim, error) {
	q, args := `SELECT domain, gateway, created, checked FROM domain_claims ORDER BY domain COLLATE "C"`, []any(nil)
	if gateway != "" {
		q, args = `SELECT domain, gateway, created, checked FROM domain_claims WHERE gateway = $1 ORDER BY domain COLLATE "C"`, []any{gateway}
	}
	rows, _ := s.pool.Query(ctx, q, args...)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (registry.DomainClaim, error) {
		var c registry.DomainClaim
		var created, checked time.Time
		err := row.Scan(&c.Domain, &c.Gateway, &created, &checked)
		c.Created, c.Checked = created.UTC(), checked.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	return out, nil
}

// ReleaseDomain removes gateway's claim on domain (every claim for "").
func (s *Store) ReleaseDomain(ctx context.Context, gateway, domain string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		if domain == "" {
			tag, err := tx.Exec(ctx, `DELETE FROM domain_claims WHERE gateway = $1`, gateway)
			if err != nil {
				return fmt.Errorf("release domains of %s: %w", gateway, err)
			}
			if tag.RowsAffected() == 0 {
				return nil
			}
			return s.notify(ctx, tx, gateway)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM domain_claims WHERE gateway = $1 AND domain = $2`, gateway, domain)
		if err != nil {
			return fmt.Errorf("release %s: %w", domain, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("domain %s of %s: %w", domain, gateway, registry.ErrNotFound)
		}
		return s.notify(ctx, tx, gateway)
	})
}
