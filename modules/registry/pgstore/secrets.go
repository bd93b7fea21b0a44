package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// SealToken stores sealed for the gateway, only while tokenHash is still its
// token: a seal racing a reclamation must not resurrect the old token.
func (s *Store) SealToken(ctx context.Context, name string, tokenHash, sealed []byte) error {
	if len(tokenHash) == 0 || len(sealed) == 0 {
		return fmt.Errorf("seal gateway %s: %w", name, registry.ErrInvalidInput)
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO gateway_secrets (name, token_hash, sealed)
			SELECT name, token_hash, $3 FROM gateways WHERE name = $1 AND token_hash = $2
			ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, sealed = excluded.sealed`,
			name, tokenHash, sealed)
		if err != nil {
			return fmt.Errorf("seal gateway %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("seal gateway %s: %w", name, registry.ErrNotFound)
		}
		return nil
	})
}

// SealedToken returns the seal of the gateway's current token and that
// token's hash; ErrNotFound when the current token was never sealed.
func (s *Store) SealedToken(ctx context.Context, name string) (tokenHash, sealed []byte, err error) {
	err = s.pool.QueryRow(ctx, `SELECT s.token_hash, s.sealed FROM gateway_secrets s
		JOIN gateways g ON g.name = s.name AND g.token_hash = s.token_hash WHERE s.name = $1`, name).Scan(&tokenHash, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("sealed token of %s: %w", name, registry.ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sealed token of %s: %w", name, err)
	}
	return tokenHash, sealed, nil
}
