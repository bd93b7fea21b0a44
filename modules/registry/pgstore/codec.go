package pgstore

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// gatewayCols are the columns gatewayRow reads, from gatewayFrom.
const gatewayCols = `g.name, g.token_hash, g.mode, g.description, g.account_id, a.email, a.optout,
	g.email_verified, g.verify_token_hash, g.verify_expires, g.reclaim_token_hash, g.reclaim_expires,
	g.last_ping, g.public_v4, g.public_v6, g.local_addrs, g.expired, g.created, g.disabled, g.allow_from`

// gatewayFrom joins the owner's account, which most reads report.
const gatewayFrom = `gateways g LEFT JOIN accounts a ON a.id = g.account_id`

// gatewayRow receives one row of gatewayCols before it is decoded, so that
// every read decodes NULLs, times and addresses the same way.
type gatewayRow struct {
	name, mode, description                  string
	tokenHash, verifyHash, reclaimHash       []byte
	accountID                                *int64
	email, v4, v6, local, allowFrom          *string
	optOut                                   *bool
	verifyExp, reclaimExp, lastPing, created *time.Time
	emailVerified, expired, disabled         bool
}

// dest returns the scan destinations in gatewayCols order.
func (r *gatewayRow) dest() []any {
	return []any{&r.name, &r.tokenHash, &r.mode, &r.description, &r.accountID, &r.email, &r.optOut,
		&r.emailVerified, &r.verifyHash, &r.verifyExp, &r.reclaimHash, &r.reclaimExp,
		&r.lastPing, &r.v4, &r.v6, &r.local, &r.expired, &r.created, &r.disabled, &r.allowFrom}
}

func (r *gatewayRow) gateway() (*registry.Gateway, error) {
	g := &registry.Gateway{
		Name:             r.name,
		TokenHash:        r.tokenHash,
		Mode:             registry.Mode(r.mode),
		Description:      r.description,
		AccountID:        deref(r.accountID),
		Email:            deref(r.email),
		OptOut:           deref(r.optOut),
		EmailVerified:    r.emailVerified,
		VerifyTokenHash:  r.verifyHash,
		VerifyExpires:    timeFrom(r.verifyExp),
		ReclaimTokenHash: r.reclaimHash,
		ReclaimExpires:   timeFrom(r.reclaimExp),
		LastPing:         timeFrom(r.lastPing),
		Expired:          r.expired,
		Disabled:         r.disabled,
		Created:          timeFrom(r.created),
	}
	var err error
	if g.PublicV4, err = addrFrom(r.v4); err != nil {
		return nil, fmt.Errorf("gateway %s public_v4: %w", r.name, err)
	}
	if g.PublicV6, err = addrFrom(r.v6); err != nil {
		return nil, fmt.Errorf("gateway %s public_v6: %w", r.name, err)
	}
	if g.LocalAddrs, err = listFrom(r.local, netip.ParseAddr); err != nil {
		return nil, fmt.Errorf("gateway %s local_addrs: %w", r.name, err)
	}
	if g.AllowFrom, err = listFrom(r.allowFrom, netip.ParsePrefix); err != nil {
		return nil, fmt.Errorf("gateway %s allow_from: %w", r.name, err)
	}
	return g, nil
}

// scanGateway reads one gatewayCols row; pgx.ErrNoRows becomes
// registry.ErrNotFound.
func scanGateway(row registry.Scanner) (*registry.Gateway, error) {
	var r gatewayRow
	if err := row.Scan(r.dest()...); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, registry.ErrNotFound
		}
		return nil, fmt.Errorf("read gateway: %w", err)
	}
	return r.gateway()
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// timeArg stores the zero time as NULL.
func timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// timeFrom returns stored times in UTC; pgx decodes them in time.Local.
func timeFrom(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// bytesArg stores an empty hash as NULL, so the unique index never sees
// two "empty" tokens collide and an empty lookup matches nothing.
func bytesArg(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func int64Arg(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

func addrArg(a netip.Addr) any {
	if !a.IsValid() {
		return nil
	}
	return a.String()
}

func addrFrom(s *string) (netip.Addr, error) {
	if s == nil {
		return netip.Addr{}, nil
	}
	return netip.ParseAddr(*s)
}

// listArg stores a list of addresses or networks as space-separated
// text; none is NULL.
func listArg[T fmt.Stringer](xs []T) any {
	if len(xs) == 0 {
		return nil
	}
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x.String())
	}
	return b.String()
}

// listFrom reads what listArg stored, each field with parse.
func listFrom[T any](s *string, parse func(string) (T, error)) ([]T, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	fields := strings.Fields(*s)
	xs := make([]T, len(fields))
	for i, f := range fields {
		x, err := parse(f)
		if err != nil {
			return nil, err
		}
		xs[i] = x
	}
	return xs, nil
}

// ttlSeconds is how a record's TTL is stored; DNS TTLs are whole seconds.
func ttlSeconds(d time.Duration) int32 { return int32(d / time.Second) }
