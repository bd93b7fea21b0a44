package gatehouseapp

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// minOperatorToken is the shortest operator token accepted: it guards the
// zone's ACME challenge, so whoever holds it can obtain a certificate for
// *.ZONE, and it must not be guessable.
const minOperatorToken = 32

// provisionOperator resolves the operator token's placeholders and keeps
// only its hash, so the token itself is in memory no longer than the
// config that names it (which, with a placeholder, never holds it).
func (a *App) provisionOperator(repl *caddy.Replacer) error {
	token := repl.ReplaceAll(a.OperatorToken, "")
	a.OperatorToken = ""
	if token == "" {
		// An unset variable disables the operator rather than failing,
		// so that a config validates without its secrets.
		a.operatorHash = nil
		return nil
	}
	if len(token) < minOperatorToken {
		return fmt.Errorf("gatehouse: operator_token must be at least %d characters", minOperatorToken)
	}
	h := sha256.Sum256([]byte(token))
	a.operatorHash = h[:]
	a.logger.Info("operator token set: the records API accepts it for the zone's ACME challenge")
	return nil
}

// IsOperator reports whether token is the operator token, in time that
// does not depend on where the two differ: hashing first makes the
// comparison constant-length too.
func (a *App) IsOperator(token string) bool {
	if a.operatorHash == nil || token == "" {
		return false
	}
	h := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(h[:], a.operatorHash) == 1
}

// loadZoneRecords puts the zone's own records (the operator's ACME
// challenges) in the DNS index, at start and after missed changes,
// through the registry's one records path.
func (a *App) loadZoneRecords(ctx context.Context) error {
	if err := a.registry.Reload(ctx, registry.ZoneSubtree()); err != nil {
		return fmt.Errorf("gatehouse: loading the zone's own records: %w", err)
	}
	return nil
}
