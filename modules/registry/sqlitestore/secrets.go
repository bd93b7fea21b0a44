package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// SealToken stores sealed for the gateway, only while tokenHash is still its
// token: a seal racing a reclamation must not resurrect the old token.
func (s *Store) SealToken(ctx context.Context, name string, tokenHash, sealed []byte) error {
	if len(tokenHash) == 0 || len(sealed) == 0 {
		return fmt.Errorf("seal gateway %s: %w", name, registry.ErrInvalidInput)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		// "WHERE true" tells SQLite's parser that ON CONFLICT belongs to
		// the INSERT, not to a join of the SELECT.
		res, err := tx.ExecContext(ctx, `INSERT INTO gateway_secrets (name, token_hash, sealed)
			SELECT name, token_hash, ?3 FROM gateways WHERE name = ?1 AND token_hash = ?2 AND true
			ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, sealed = excluded.sealed`,
			name, tokenHash, sealed)
		return affectedOne(res, err, "seal gateway "+name)
	})
}

// SealedToken returns the seal of the gateway's current token and that
// token's hash; ErrNotFound when the current token was never sealed.
func (s *Store) SealedToken(ctx context.Context, name string) (tokenHash, sealed []byte, err error) {
	err = s.reader.QueryRowContext(ctx, `SELECT s.token_hash, s.sealed FROM gateway_secrets s
		JOIN gateways g ON g.name = s.name AND g.token_hash = s.token_hash WHERE s.name = ?`, name).Scan(&tokenHash, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("sealed token of %s: %w", name, registry.ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sealed token of %s: %w", name, err)
	}
	return tokenHash, sealed, nil
}
