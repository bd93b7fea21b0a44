package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

var _ registry.AdminStore = (*Store)(nil)

// ListGateways returns one page of the gateways q selects, by name. The
// name cursor makes each page an index range scan however deep the
// listing goes; the filters scan within it, which is what an operator's
// occasional search can afford.
func (s *Store) ListGateways(ctx context.Context, q registry.ListQuery) ([]*registry.Gateway, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	where := []string{"g.name > ?"}
	args := []any{q.After}
	if q.Name != "" {
		where = append(where, "instr(g.name, ?) > 0")
		args = append(args, strings.ToLower(q.Name))
	}
	if q.Email != "" {
		where = append(where, "instr(lower(a.email), ?) > 0")
		args = append(args, strings.ToLower(q.Email))
	}
	if q.Addr.IsValid() {
		a := q.Addr.Unmap().String()
		where = append(where, "(g.public_v4 = ? OR g.public_v6 = ? OR instr(' ' || g.local_addrs || ' ', ?) > 0)")
		args = append(args, a, a, " "+a+" ")
	}
	if q.Mode != "" {
		where = append(where, "g.mode = ?")
		args = append(args, string(q.Mode))
	}
	if q.Expired != nil {
		where = append(where, "g.expired = ?")
		args = append(args, boolArg(*q.Expired))
	}
	if q.Disabled != nil {
		where = append(where, "g.disabled = ?")
		args = append(args, boolArg(*q.Disabled))
	}
	args = append(args, q.Limit)
	rows, err := s.reader.QueryContext(ctx, `SELECT `+gatewayCols+` FROM `+gatewayFrom+`
		WHERE `+strings.Join(where, " AND ")+` ORDER BY g.name LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	defer rows.Close()
	return registry.CollectRows(rows, "list gateways", scanGateway)
}

// Stats counts the gateways in one scan.
func (s *Store) Stats(ctx context.Context) (registry.Stats, error) {
	st := registry.Stats{ByMode: map[registry.Mode]int{}}
	rows, err := s.reader.QueryContext(ctx, `SELECT mode, count(*), sum(expired), sum(disabled)
		FROM gateways GROUP BY mode`)
	if err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	defer rows.Close()
	return registry.ScanStats(rows)
}

// ReservedNames lists the run-time reservations, sorted.
func (s *Store) ReservedNames(ctx context.Context) ([]string, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT name FROM reserved_names ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("reserved names: %w", err)
	}
	names, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("reserved names: %w", err)
	}
	return names, nil
}

// ReserveName adds a run-time reservation; reserving twice is no error.
func (s *Store) ReserveName(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO reserved_names (name, created) VALUES (?, ?)
			ON CONFLICT (name) DO NOTHING`, name, time.Now().UnixNano())
		if err != nil {
			return fmt.Errorf("reserve %s: %w", name, err)
		}
		return nil
	})
}

// ReleaseName removes a run-time reservation, or ErrNotFound.
func (s *Store) ReleaseName(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM reserved_names WHERE name = ?`, name)
		return affectedOne(res, err, "reserved name "+name)
	})
}

// reservedInTx refuses a name reserved at run time, inside the writing
// transaction, so a reservation made by another process holds too.
func reservedInTx(ctx context.Context, tx *sql.Tx, name string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM reserved_names WHERE name = ?`, name).Scan(&n); err != nil {
		return fmt.Errorf("check reserved %s: %w", name, err)
	}
	if n > 0 {
		return fmt.Errorf("%w: %s", registry.ErrReservedName, name)
	}
	return nil
}
