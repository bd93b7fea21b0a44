package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// ZoneRecords returns the zone's own records, oldest first.
func (s *Store) ZoneRecords(ctx context.Context) ([]registry.Record, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+recordCols+` FROM zone_records ORDER BY created, id`)
	got, err := pgx.CollectRows(rows, scanRecordRow)
	if err != nil {
		return nil, fmt.Errorf("zone records: %w", err)
	}
	return zoneRecords(got), nil
}

// AppendZoneRecords adds the zone records that are not already there.
func (s *Store) AppendZoneRecords(ctx context.Context, recs []registry.Record, max int) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		if err := lockZoneRecords(ctx, tx); err != nil {
			return err
		}
		b := &pgx.Batch{}
		queueZoneInserts(b, recs)
		if err := finishZoneRecords(ctx, tx, b, max); err != nil {
			return err
		}
		return s.notify(ctx, tx, registry.ZoneChange)
	})
}

// SetZoneRecords replaces every zone RRset named in recs.
func (s *Store) SetZoneRecords(ctx context.Context, recs []registry.Record, max int) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		if err := lockZoneRecords(ctx, tx); err != nil {
			return err
		}
		b := &pgx.Batch{}
		type rrset struct{ owner, rtype string }
		done := map[rrset]bool{}
		for _, r := range recs {
			k := rrset{r.Owner, r.Type}
			if !done[k] {
				done[k] = true
				b.Queue(`DELETE FROM zone_records WHERE owner = $1 AND type = $2`, r.Owner, r.Type)
			}
		}
		queueZoneInserts(b, recs)
		if err := finishZoneRecords(ctx, tx, b, max); err != nil {
			return err
		}
		return s.notify(ctx, tx, registry.ZoneChange)
	})
}

// DeleteZoneRecords removes the zone records matching any filter and
// returns them, oldest first.
func (s *Store) DeleteZoneRecords(ctx context.Context, filters []registry.RecordFilter) ([]registry.Record, error) {
	var removed []recordRow
	err := s.write(ctx, func(tx pgx.Tx) error {
		if len(filters) == 0 {
			return nil
		}
		if err := lockZoneRecords(ctx, tx); err != nil {
			return err
		}
		var err error
		removed, err = deleteFiltered(ctx, tx, `DELETE FROM zone_records WHERE true`, nil, filters)
		if err != nil {
			return fmt.Errorf("delete zone records: %w", err)
		}
		if len(removed) == 0 {
			return nil
		}
		return s.notify(ctx, tx, registry.ZoneChange)
	})
	if err != nil {
		return nil, err
	}
	return zoneRecords(removed), nil
}

// PruneZoneRecords deletes stale zone records of one owner and type.
func (s *Store) PruneZoneRecords(ctx context.Context, owner, rtype string, cutoff time.Time) (bool, error) {
	var pruned bool
	err := s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM zone_records WHERE owner = $1 AND type = $2 AND created < $3`, owner, rtype, cutoff)
		if err != nil {
			return fmt.Errorf("prune zone records: %w", err)
		}
		if pruned = tag.RowsAffected() > 0; !pruned {
			return nil
		}
		return s.notify(ctx, tx, registry.ZoneChange)
	})
	return pruned, err
}

// lockZoneRecords makes the zone-record writers of every node run one
// after the other until the transaction ends, so that the max check counts
// what is really there; readers are not blocked.
func lockZoneRecords(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `LOCK TABLE zone_records IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("lock zone records: %w", err)
	}
	return nil
}

// queueZoneInserts adds recs to b, skipping at execution any identical to
// one already stored. A zero Created is set to now.
func queueZoneInserts(b *pgx.Batch, recs []registry.Record) {
	now := time.Now()
	for _, r := range recs {
		created := r.Created
		if created.IsZero() {
			created = now
		}
		b.Queue(`INSERT INTO zone_records (owner, type, value, ttl_seconds, created)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner, type, value) DO NOTHING`,
			r.Owner, r.Type, r.Value, ttlSeconds(r.TTL), created)
	}
}

// finishZoneRecords runs the queued changes and the count of the zone's
// records in one round trip, and fails with registry.ErrTooMany when the
// zone would hold more than max; the caller's transaction then writes
// nothing.
func finishZoneRecords(ctx context.Context, tx pgx.Tx, b *pgx.Batch, max int) error {
	var n int
	b.Queue(`SELECT count(*) FROM zone_records`).QueryRow(func(row pgx.Row) error {
		return row.Scan(&n)
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("zone records: %w", err)
	}
	if n > max {
		return fmt.Errorf("%w: the zone would hold %d records of its own, at most %d", registry.ErrTooMany, n, max)
	}
	return nil
}

func scanRecordRow(row pgx.CollectableRow) (recordRow, error) {
	var r recordRow
	return r, row.Scan(r.dest()...)
}

// zoneRecords converts rows of zone_records, which belong to no gateway.
func zoneRecords(rows []recordRow) []registry.Record {
	out := make([]registry.Record, len(rows))
	for i, r := range rows {
		out[i] = r.record("")
	}
	return out
}
