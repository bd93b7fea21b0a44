package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// ZoneRecords returns the zone's own records, oldest first.
func (s *Store) ZoneRecords(ctx context.Context) ([]registry.Record, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT id, owner, type, value, ttl_seconds, created
		FROM zone_records ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("zone records: %w", err)
	}
	got, err := scanRecordRows(rows)
	if err != nil {
		return nil, fmt.Errorf("zone records: %w", err)
	}
	return zoneRecords(got), nil
}

// AppendZoneRecords adds the zone records that are not already there.
func (s *Store) AppendZoneRecords(ctx context.Context, recs []registry.Record, max int) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := insertZoneRecords(ctx, tx, recs); err != nil {
			return err
		}
		return checkZoneMax(ctx, tx, max)
	})
}

// SetZoneRecords replaces every zone RRset named in recs.
func (s *Store) SetZoneRecords(ctx context.Context, recs []registry.Record, max int) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		type rrset struct{ owner, rtype string }
		done := map[rrset]bool{}
		for _, r := range recs {
			k := rrset{r.Owner, r.Type}
			if done[k] {
				continue
			}
			done[k] = true
			if _, err := tx.ExecContext(ctx, `DELETE FROM zone_records WHERE owner = ? AND type = ?`, r.Owner, r.Type); err != nil {
				return fmt.Errorf("clear zone %q %s: %w", r.Owner, r.Type, err)
			}
		}
		if err := insertZoneRecords(ctx, tx, recs); err != nil {
			return err
		}
		return checkZoneMax(ctx, tx, max)
	})
}

// DeleteZoneRecords removes the zone records matching any filter and
// returns them, oldest first.
func (s *Store) DeleteZoneRecords(ctx context.Context, filters []registry.RecordFilter) ([]registry.Record, error) {
	var removed []recordRow
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		removed, err = deleteFiltered(ctx, tx, `DELETE FROM zone_records WHERE true`, nil, filters)
		if err != nil {
			return fmt.Errorf("delete zone records: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return zoneRecords(removed), nil
}

// PruneZoneRecords deletes stale zone records of one owner and type.
func (s *Store) PruneZoneRecords(ctx context.Context, owner, rtype string, cutoff time.Time) (bool, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM zone_records WHERE owner = ? AND type = ? AND created < ?`,
			owner, rtype, cutoff.UnixNano())
		if err != nil {
			return fmt.Errorf("prune zone records: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n > 0, err
}

// insertZoneRecords adds recs, skipping any identical to one already
// stored. A zero Created is set to now.
func insertZoneRecords(ctx context.Context, tx *sql.Tx, recs []registry.Record) error {
	now := time.Now()
	for _, r := range recs {
		created := r.Created
		if created.IsZero() {
			created = now
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO zone_records (owner, type, value, ttl_seconds, created)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner, type, value) DO NOTHING`,
			r.Owner, r.Type, r.Value, ttlSeconds(r.TTL), created.UnixNano()); err != nil {
			return fmt.Errorf("insert zone record %q %s: %w", r.Owner, r.Type, err)
		}
	}
	return nil
}

// checkZoneMax fails with registry.ErrTooMany when the zone now holds more
// than max records of its own; the caller's transaction then writes nothing.
func checkZoneMax(ctx context.Context, tx *sql.Tx, max int) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM zone_records`).Scan(&n); err != nil {
		return fmt.Errorf("count zone records: %w", err)
	}
	if n > max {
		return fmt.Errorf("%w: the zone would hold %d records of its own, at most %d", registry.ErrTooMany, n, max)
	}
	return nil
}

// scanRecordRows reads rows of id, owner, type, value, ttl_seconds,
// created, and closes rows.
func scanRecordRows(rows *sql.Rows) ([]recordRow, error) {
	var out []recordRow
	for rows.Next() {
		var r recordRow
		if err := rows.Scan(&r.id, &r.owner, &r.rtype, &r.value, &r.ttl, &r.created); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	return out, nil
}

// zoneRecords converts rows of zone_records, which belong to no gateway.
func zoneRecords(rows []recordRow) []registry.Record {
	out := make([]registry.Record, len(rows))
	for i, r := range rows {
		out[i] = r.record("")
	}
	return out
}
