package sqlitestore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// recordRow receives a record's columns; they are nullable because
// ForEachGateway and Records read them through a LEFT JOIN.
type recordRow struct {
	id                  int64
	owner, rtype, value sql.NullString
	ttl, created        sql.NullInt64
}

func (r recordRow) record(gateway string) registry.Record {
	return registry.Record{
		Gateway: gateway,
		Owner:   r.owner.String,
		Type:    r.rtype.String,
		Value:   r.value.String,
		TTL:     time.Duration(r.ttl.Int64) * time.Second,
		Created: time.Unix(0, r.created.Int64).UTC(),
	}
}

// Records returns the gateway's records, oldest first.
func (s *Store) Records(ctx context.Context, gateway string) ([]registry.Record, error) {
	// The join tells an unknown gateway (no row) from one without
	// records (one row of NULLs) in a single query.
	rows, err := s.reader.QueryContext(ctx, `SELECT r.id, r.owner, r.type, r.value, r.ttl_seconds, r.created
		FROM gateways g LEFT JOIN records r ON r.gateway = g.name
		WHERE g.name = ? ORDER BY r.created, r.id`, gateway)
	if err != nil {
		return nil, fmt.Errorf("records of %s: %w", gateway, err)
	}
	defer rows.Close()
	found := false
	var out []registry.Record
	for rows.Next() {
		found = true
		var id sql.NullInt64
		var r recordRow
		if err := rows.Scan(&id, &r.owner, &r.rtype, &r.value, &r.ttl, &r.created); err != nil {
			return nil, fmt.Errorf("records of %s: %w", gateway, err)
		}
		if id.Valid {
			out = append(out, r.record(gateway))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("records of %s: %w", gateway, err)
	}
	if !found {
		return nil, fmt.Errorf("gateway %s: %w", gateway, registry.ErrNotFound)
	}
	return out, nil
}

// AppendRecords adds the records that are not already there.
func (s *Store) AppendRecords(ctx context.Context, gateway string, recs []registry.Record, max int) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := gatewayExists(ctx, tx, gateway); err != nil {
			return err
		}
		if err := insertRecords(ctx, tx, gateway, recs); err != nil {
			return err
		}
		return checkMax(ctx, tx, gateway, max)
	})
}

// SetRecords replaces every RRset named in recs.
func (s *Store) SetRecords(ctx context.Context, gateway string, recs []registry.Record, max int) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := gatewayExists(ctx, tx, gateway); err != nil {
			return err
		}
		type rrset struct{ owner, rtype string }
		done := map[rrset]bool{}
		for _, r := range recs {
			k := rrset{r.Owner, r.Type}
			if done[k] {
				continue
			}
			done[k] = true
			if _, err := tx.ExecContext(ctx, `DELETE FROM records WHERE gateway = ? AND owner = ? AND type = ?`,
				gateway, r.Owner, r.Type); err != nil {
				return fmt.Errorf("clear %s %q %s: %w", gateway, r.Owner, r.Type, err)
			}
		}
		if err := insertRecords(ctx, tx, gateway, recs); err != nil {
			return err
		}
		return checkMax(ctx, tx, gateway, max)
	})
}

// DeleteRecords removes the records matching any filter and returns them,
// oldest first.
func (s *Store) DeleteRecords(ctx context.Context, gateway string, filters []registry.RecordFilter) ([]registry.Record, error) {
	var removed []recordRow
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := gatewayExists(ctx, tx, gateway); err != nil {
			return err
		}
		var err error
		removed, err = deleteFiltered(ctx, tx, `DELETE FROM records WHERE gateway = ?`, []any{gateway}, filters)
		if err != nil {
			return fmt.Errorf("delete records of %s: %w", gateway, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]registry.Record, len(removed))
	for i, r := range removed {
		out[i] = r.record(gateway)
	}
	return out, nil
}

// PruneRecords deletes stale records of one owner and type everywhere.
func (s *Store) PruneRecords(ctx context.Context, owner, rtype string, cutoff time.Time) ([]string, error) {
	var gateways []string
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM records WHERE owner = ? AND type = ? AND created < ?
			RETURNING gateway`, owner, rtype, cutoff.UnixNano())
		if err != nil {
			return fmt.Errorf("prune records: %w", err)
		}
		if gateways, err = scanStrings(rows); err != nil {
			return fmt.Errorf("prune records: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(gateways)
	return slices.Compact(gateways), nil
}

// gatewayExists returns registry.ErrNotFound for an unknown gateway, which
// the records' foreign key would otherwise report as a constraint failure.
func gatewayExists(ctx context.Context, tx *sql.Tx, gateway string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM gateways WHERE name = ?`, gateway).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("gateway %s: %w", gateway, registry.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("gateway %s: %w", gateway, err)
	}
	return nil
}

// insertRecords adds recs, skipping any identical to one already stored. A
// zero Created is set to now.
func insertRecords(ctx context.Context, tx *sql.Tx, gateway string, recs []registry.Record) error {
	if len(recs) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gateway, owner, type, value) DO NOTHING`)
	if err != nil {
		return fmt.Errorf("insert records: %w", err)
	}
	defer stmt.Close()
	now := time.Now()
	for _, r := range recs {
		created := r.Created
		if created.IsZero() {
			created = now
		}
		if _, err := stmt.ExecContext(ctx, gateway, r.Owner, r.Type, r.Value, ttlSeconds(r.TTL), created.UnixNano()); err != nil {
			return fmt.Errorf("insert record %s %q %s: %w", gateway, r.Owner, r.Type, err)
		}
	}
	return nil
}

// checkMax fails with registry.ErrTooMany when the gateway now holds more
// than max records; the caller's transaction then writes nothing.
func checkMax(ctx context.Context, tx *sql.Tx, gateway string, max int) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM records WHERE gateway = ?`, gateway).Scan(&n); err != nil {
		return fmt.Errorf("count records of %s: %w", gateway, err)
	}
	if n > max {
		return fmt.Errorf("%w: %s would hold %d records, at most %d", registry.ErrTooMany, gateway, n, max)
	}
	return nil
}

// deleteFiltered runs del (a DELETE with its WHERE begun, over args) once
// per filter, narrowed by the filter's set fields, and returns the rows
// removed, oldest first. A row matching several filters is gone after the
// first and is reported once.
func deleteFiltered(ctx context.Context, tx *sql.Tx, del string, args []any, filters []registry.RecordFilter) ([]recordRow, error) {
	var removed []recordRow
	for _, f := range filters {
		q, a := del, slices.Clone(args)
		if f.Owner != nil {
			q += ` AND owner = ?`
			a = append(a, *f.Owner)
		}
		if f.Type != "" {
			q += ` AND type = ?`
			a = append(a, f.Type)
		}
		if f.Value != "" {
			q += ` AND value = ?`
			a = append(a, f.Value)
		}
		if f.TTL != 0 {
			q += ` AND ttl_seconds = ?`
			a = append(a, ttlSeconds(f.TTL))
		}
		rows, err := tx.QueryContext(ctx, q+` RETURNING id, owner, type, value, ttl_seconds, created`, a...)
		if err != nil {
			return nil, err
		}
		got, err := scanRecordRows(rows)
		if err != nil {
			return nil, err
		}
		removed = append(removed, got...)
	}
	slices.SortFunc(removed, func(a, b recordRow) int {
		return cmp.Or(cmp.Compare(a.created.Int64, b.created.Int64), cmp.Compare(a.id, b.id))
	})
	return removed, nil
}
