package pgstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

var _ registry.AdminStore = (*Store)(nil)

// ListGateways returns one page of the gateways q selects, by name. The
// name cursor makes each page a primary-key range scan however deep the
// listing goes; the filters scan within it.
func (s *Store) ListGateways(ctx context.Context, q registry.ListQuery) ([]*registry.Gateway, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"g.name > " + arg(q.After)}
	if q.Name != "" {
		where = append(where, "strpos(g.name, "+arg(strings.ToLower(q.Name))+") > 0")
	}
	if q.Email != "" {
		where = append(where, "strpos(lower(a.email), "+arg(strings.ToLower(q.Email))+") > 0")
	}
	if q.Addr.IsValid() {
		a := arg(q.Addr.Unmap().String())
		where = append(where, "(g.public_v4 = "+a+" OR g.public_v6 = "+a+
			" OR strpos(' ' || g.local_addrs || ' ', ' ' || "+a+" || ' ') > 0)")
	}
	if q.Mode != "" {
		where = append(where, "g.mode = "+arg(string(q.Mode)))
	}
	if q.Expired != nil {
		where = append(where, "g.expired = "+arg(*q.Expired))
	}
	if q.Disabled != nil {
		where = append(where, "g.disabled = "+arg(*q.Disabled))
	}
	rows, err := s.pool.Query(ctx, `SELECT `+gatewayCols+` FROM `+gatewayFrom+`
		WHERE `+strings.Join(where, " AND ")+` ORDER BY g.name LIMIT `+arg(q.Limit), args...)
	if err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	defer rows.Close()
	return registry.CollectRows(rows, "list gateways", scanGateway)
}

// Stats counts the gateways in one scan.
func (s *Store) Stats(ctx context.Context) (registry.Stats, error) {
	st := registry.Stats{ByMode: map[registry.Mode]int{}}
	rows, err := s.pool.Query(ctx, `SELECT mode, count(*), count(*) FILTER (WHERE expired),
		count(*) FILTER (WHERE disabled) FROM gateways GROUP BY mode`)
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	defer rows.Close()
	return registry.ScanStats(rows)
}

// ReservedNames lists the run-time reservations, sorted.
func (s *Store) ReservedNames(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT name FROM reserved_names ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("reserved names: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reserved names: %w", err)
	}
	return names, nil
}

// ReserveName adds a run-time reservation; reserving twice is no error.
func (s *Store) ReserveName(ctx context.Context, name string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO reserved_names (name, created) VALUES ($1, now())
			ON CONFLICT (name) DO NOTHING`, name); err != nil {
			return fmt.Errorf("reserve %s: %w", name, err)
		}
		return nil
	})
}

// ReleaseName removes a run-time reservation, or ErrNotFound.
func (s *Store) ReleaseName(ctx context.Context, name string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM reserved_names WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("release %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("reserved name %s: %w", name, registry.ErrNotFound)
		}
		return nil
	})
}

// reservedInTx refuses a name reserved at run time, inside the writing
// transaction, so that a reservation made on another node holds too.
func reservedInTx(ctx context.Context, tx pgx.Tx, name string) error {
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM reserved_names WHERE name = $1`, name).Scan(&n); err != nil {
		return fmt.Errorf("check reserved %s: %w", name, err)
	}
	if n > 0 {
		return fmt.Errorf("%w: %s", registry.ErrReservedName, name)
	}
	return nil
}
