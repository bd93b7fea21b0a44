package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// recordRow receives a record's columns; they are nullable because
// ForEachGateway and Records read them through a LEFT JOIN.
type recordRow struct {
	id                  *int64
	owner, rtype, value *string
	ttl                 *int32
	created             *time.Time
}

func (r recordRow) record(gateway string) registry.Record {
	return registry.Record{
		Gateway: gateway,
		Owner:   deref(r.owner),
		Type:    deref(r.rtype),
		Value:   deref(r.value),
		TTL:     time.Duration(deref(r.ttl)) * time.Second,
		Created: timeFrom(r.created),
	}
}

const recordCols = `id, owner, type, value, ttl_seconds, created`

func (r *recordRow) dest() []any {
	return []any{&r.id, &r.owner, &r.rtype, &r.value, &r.ttl, &r.created}
}

// Records returns the gateway's records, oldest first.
func (s *Store) Records(ctx context.Context, gateway string) ([]registry.Record, error) {
	// The join tells an unknown gateway (no row) from one without
	// records (one row of NULLs) in a single query.
	rows, _ := s.pool.Query(ctx, `SELECT r.id, r.owner, r.type, r.value, r.ttl_seconds, r.created
		FROM gateways g LEFT JOIN records r ON r.gateway = g.name
		WHERE g.name = $1 ORDER BY r.created, r.id`, gateway)
	defer rows.Close()
	found := false
	var out []registry.Record
	for rows.Next() {
		found = true
		var r recordRow
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, fmt.Errorf("records of %s: %w", gateway, err)
		}
		if r.id != nil {
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
	return s.write(ctx, func(tx pgx.Tx) error {
		if err := lockGateway(ctx, tx, gateway); err != nil {
			return err
		}
		b := &pgx.Batch{}
		queueInserts(b, gateway, recs)
		if err := s.finishRecords(ctx, tx, b, gateway, max); err != nil {
			return err
		}
		return s.notify(ctx, tx, gateway)
	})
}

// SetRecords replaces every RRset named in recs.
func (s *Store) SetRecords(ctx context.Context, gateway string, recs []registry.Record, max int) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		if err := lockGateway(ctx, tx, gateway); err != nil {
			return err
		}
		b := &pgx.Batch{}
		type rrset struct{ owner, rtype string }
		done := map[rrset]bool{}
		for _, r := range recs {
			k := rrset{r.Owner, r.Type}
			if !done[k] {
				done[k] = true
				b.Queue(`DELETE FROM records WHERE gateway = $1 AND owner = $2 AND type = $3`, gateway, r.Owner, r.Type)
			}
		}
		queueInserts(b, gateway, recs)
		if err := s.finishRecords(ctx, tx, b, gateway, max); err != nil {
			return err
		}
		return s.notify(ctx, tx, gateway)
	})
}

// DeleteRecords removes the records matching any filter and returns them,
// oldest first.
func (s *Store) DeleteRecords(ctx context.Context, gateway string, filters []registry.RecordFilter) ([]registry.Record, error) {
	var removed []recordRow
	err := s.write(ctx, func(tx pgx.Tx) error {
		if err := lockGateway(ctx, tx, gateway); err != nil {
			return err
		}
		if len(filters) == 0 {
			return nil
		}
		var err error
		removed, err = deleteFiltered(ctx, tx, `DELETE FROM records WHERE gateway = $1`, []any{gateway}, filters)
		if err != nil {
			return fmt.Errorf("delete records of %s: %w", gateway, err)
		}
		if len(removed) == 0 {
			return nil
		}
		return s.notify(ctx, tx, gateway)
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
	err := s.write(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `WITH d AS (
				DELETE FROM records WHERE owner = $1 AND type = $2 AND created < $3 RETURNING gateway
			) SELECT DISTINCT gateway FROM d`, owner, rtype, cutoff)
		var err error
		if gateways, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return fmt.Errorf("prune records: %w", err)
		}
		return s.notify(ctx, tx, gateways...)
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(gateways)
	return gateways, nil
}

// lockGateway takes the gateway's row lock for the rest of the
// transaction, so that concurrent record changes of one gateway run one
// after the other (the max check counts what is really there), and
// returns registry.ErrNotFound for an unknown gateway. FOR NO KEY UPDATE
// still lets the records' foreign key checks share the row.
func lockGateway(ctx context.Context, tx pgx.Tx, gateway string) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM gateways WHERE name = $1 FOR NO KEY UPDATE`, gateway).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("gateway %s: %w", gateway, registry.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("gateway %s: %w", gateway, err)
	}
	return nil
}

// queueInserts adds recs to b, skipping at execution any identical to one
// already stored. A zero Created is set to now.
func queueInserts(b *pgx.Batch, gateway string, recs []registry.Record) {
	now := time.Now()
	for _, r := range recs {
		created := r.Created
		if created.IsZero() {
			created = now
		}
		b.Queue(`INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (gateway, owner, type, value) DO NOTHING`,
			gateway, r.Owner, r.Type, r.Value, ttlSeconds(r.TTL), created)
	}
}

// finishRecords runs the queued changes and the count of the gateway's
// records in one round trip, and fails with registry.ErrTooMany when the
// gateway would hold more than max records; the caller's transaction then
// writes nothing.
func (s *Store) finishRecords(ctx context.Context, tx pgx.Tx, b *pgx.Batch, gateway string, max int) error {
	var n int
	b.Queue(`SELECT count(*) FROM records WHERE gateway = $1`, gateway).QueryRow(func(row pgx.Row) error {
		return row.Scan(&n)
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("records of %s: %w", gateway, err)
	}
	if n > max {
		return fmt.Errorf("%w: %s would hold %d records, at most %d", registry.ErrTooMany, gateway, n, max)
	}
	return nil
}

// deleteFiltered runs del (a DELETE with its WHERE begun, over args) once
// per filter, narrowed by the filter's set fields, all in one round trip,
// and returns the rows removed, oldest first. A row matching several
// filters is gone after the first and is reported once.
func deleteFiltered(ctx context.Context, tx pgx.Tx, del string, args []any, filters []registry.RecordFilter) ([]recordRow, error) {
	b := &pgx.Batch{}
	for _, f := range filters {
		q, a := del, slices.Clone(args)
		if f.Owner != nil {
			a = append(a, *f.Owner)
			q += fmt.Sprintf(` AND owner = $%d`, len(a))
		}
		if f.Type != "" {
			a = append(a, f.Type)
			q += fmt.Sprintf(` AND type = $%d`, len(a))
		}
		if f.Value != "" {
			a = append(a, f.Value)
			q += fmt.Sprintf(` AND value = $%d`, len(a))
		}
		if f.TTL != 0 {
			a = append(a, ttlSeconds(f.TTL))
			q += fmt.Sprintf(` AND ttl_seconds = $%d`, len(a))
		}
		b.Queue(q+` RETURNING `+recordCols, a...)
	}
	br := tx.SendBatch(ctx, b)
	var removed []recordRow
	for range filters {
		rows, _ := br.Query()
		got, err := pgx.CollectRows(rows, scanRecordRow)
		if err != nil {
			br.Close()
			return nil, err
		}
		removed = append(removed, got...)
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	slices.SortFunc(removed, func(a, b recordRow) int {
		return cmp.Or(a.created.Compare(*b.created), cmp.Compare(*a.id, *b.id))
	})
	return removed, nil
}
