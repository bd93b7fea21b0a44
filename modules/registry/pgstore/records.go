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

func (r recordRow) record(s registry.Subtree) registry.Record {
	return registry.Record{
		Subtree: s,
		Owner:   deref(r.owner),
		Type:    deref(r.rtype),
		Value:   deref(r.value),
		TTL:     time.Duration(deref(r.ttl)) * time.Second,
		Created: timeFrom(r.created),
	}
}

func records(s registry.Subtree, rows []recordRow) []registry.Record {
	out := make([]registry.Record, len(rows))
	for i, r := range rows {
		out[i] = r.record(s)
	}
	return out
}

const recordCols = `id, owner, type, value, ttl_seconds, created`

func (r *recordRow) dest() []any {
	return []any{&r.id, &r.owner, &r.rtype, &r.value, &r.ttl, &r.created}
}

func scanRecordRow(row pgx.CollectableRow) (recordRow, error) {
	var r recordRow
	return r, row.Scan(r.dest()...)
}

// subtreeKey is a subtree's value in records.gateway: the gateway's name,
// or NULL (nil) for the zone's own records, which belong to no gateway.
// NULL cannot collide with a name, and the foreign key ignores it.
func subtreeKey(s registry.Subtree) (*string, error) {
	if s.IsZone() {
		return nil, nil
	}
	name, ok := s.Gateway()
	if !ok {
		return nil, registry.ErrNoSubtree
	}
	return &name, nil
}

// subtreeWhere is the condition selecting a subtree's rows of records,
// with its arguments numbered from $1; each form uses its index.
func subtreeWhere(key *string) (string, []any) {
	if key == nil {
		return `gateway IS NULL`, nil
	}
	return `gateway = $1`, []any{*key}
}

// Records returns the subtree's records, oldest first.
func (s *Store) Records(ctx context.Context, sub registry.Subtree) ([]registry.Record, error) {
	key, err := subtreeKey(sub)
	if err != nil {
		return nil, err
	}
	if key == nil {
		rows, _ := s.pool.Query(ctx, `SELECT `+recordCols+` FROM records WHERE gateway IS NULL ORDER BY created, id`)
		got, err := pgx.CollectRows(rows, scanRecordRow)
		if err != nil {
			return nil, fmt.Errorf("records of %s: %w", sub, err)
		}
		return records(sub, got), nil
	}
	gateway := *key
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
			out = append(out, r.record(sub))
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
func (s *Store) AppendRecords(ctx context.Context, sub registry.Subtree, recs []registry.Record, check registry.RecordCheck) error {
	key, err := subtreeKey(sub)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		if err := lockSubtree(ctx, tx, key); err != nil {
			return err
		}
		b := &pgx.Batch{}
		queueInserts(b, key, recs)
		if err := finishRecords(ctx, tx, b, sub, key, check); err != nil {
			return err
		}
		return s.notifySubtrees(ctx, tx, sub)
	})
}

// SetRecords replaces every RRset named in recs.
func (s *Store) SetRecords(ctx context.Context, sub registry.Subtree, recs []registry.Record, check registry.RecordCheck) error {
	key, err := subtreeKey(sub)
	if err != nil {
		return err
	}
	where, args := subtreeWhere(key)
	return s.write(ctx, func(tx pgx.Tx) error {
		if err := lockSubtree(ctx, tx, key); err != nil {
			return err
		}
		b := &pgx.Batch{}
		type rrset struct{ owner, rtype string }
		done := map[rrset]bool{}
		for _, r := range recs {
			k := rrset{r.Owner, r.Type}
			if !done[k] {
				done[k] = true
				a := append(slices.Clone(args), r.Owner, r.Type)
				b.Queue(fmt.Sprintf(`DELETE FROM records WHERE %s AND owner = $%d AND type = $%d`, where, len(a)-1, len(a)), a...)
			}
		}
		queueInserts(b, key, recs)
		if err := finishRecords(ctx, tx, b, sub, key, check); err != nil {
			return err
		}
		return s.notifySubtrees(ctx, tx, sub)
	})
}

// DeleteRecords removes the records matching any filter and returns them,
// oldest first.
func (s *Store) DeleteRecords(ctx context.Context, sub registry.Subtree, filters []registry.RecordFilter) ([]registry.Record, error) {
	key, err := subtreeKey(sub)
	if err != nil {
		return nil, err
	}
	where, args := subtreeWhere(key)
	var removed []recordRow
	err = s.write(ctx, func(tx pgx.Tx) error {
		if err := lockSubtree(ctx, tx, key); err != nil {
			return err
		}
		if len(filters) == 0 {
			return nil
		}
		var err error
		removed, err = deleteFiltered(ctx, tx, `DELETE FROM records WHERE `+where, args, filters)
		if err != nil {
			return fmt.Errorf("delete records of %s: %w", sub, err)
		}
		if len(removed) == 0 {
			return nil
		}
		return s.notifySubtrees(ctx, tx, sub)
	})
	if err != nil {
		return nil, err
	}
	return records(sub, removed), nil
}

// PruneRecords deletes stale records of one owner and type everywhere.
func (s *Store) PruneRecords(ctx context.Context, owner, rtype string, cutoff time.Time) ([]registry.Subtree, error) {
	var subtrees []registry.Subtree
	err := s.write(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `WITH d AS (
				DELETE FROM records WHERE owner = $1 AND type = $2 AND created < $3 RETURNING gateway
			) SELECT DISTINCT gateway FROM d`, owner, rtype, cutoff)
		keys, err := pgx.CollectRows(rows, pgx.RowTo[*string])
		if err != nil {
			return fmt.Errorf("prune records: %w", err)
		}
		for _, k := range keys {
			if k == nil {
				subtrees = append(subtrees, registry.ZoneSubtree())
			} else {
				subtrees = append(subtrees, registry.GatewaySubtree(*k))
			}
		}
		return s.notifySubtrees(ctx, tx, subtrees...)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(subtrees, func(a, b registry.Subtree) int { return cmp.Compare(a.String(), b.String()) })
	return subtrees, nil
}

// lockSubtree makes the record writers of one subtree, on every node, run
// one after the other until the transaction ends, so that the check sees
// what is really there; readers are not blocked. It returns
// registry.ErrNotFound for an unknown gateway.
func lockSubtree(ctx context.Context, tx pgx.Tx, key *string) error {
	if key != nil {
		return lockGateway(ctx, tx, *key)
	}
	// The zone's subtree has no row to lock: a transaction-scoped
	// advisory lock, keyed by the schema so that stores sharing a
	// database in several schemas do not wait for each other.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('gatehouse zone records ' || current_schema(), 0))`); err != nil {
		return fmt.Errorf("lock the zone's records: %w", err)
	}
	return nil
}

// lockGateway takes the gateway's row lock for the rest of the
// transaction, so that concurrent record changes of one gateway run one
// after the other (the check sees what is really there), and
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
// already stored (records_identity for a gateway's, records_zone_identity
// for the zone's). A zero Created is set to now.
func queueInserts(b *pgx.Batch, key *string, recs []registry.Record) {
	now := time.Now()
	for _, r := range recs {
		created := r.Created
		if created.IsZero() {
			created = now
		}
		b.Queue(`INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			key, r.Owner, r.Type, r.Value, ttlSeconds(r.TTL), created)
	}
}

// finishRecords runs the queued changes and reads the subtree's records
// in one round trip, and hands them to check; its error makes the
// caller's transaction write nothing.
func finishRecords(ctx context.Context, tx pgx.Tx, b *pgx.Batch, sub registry.Subtree, key *string, check registry.RecordCheck) error {
	where, args := subtreeWhere(key)
	var all []recordRow
	b.Queue(`SELECT `+recordCols+` FROM records WHERE `+where+` ORDER BY created, id`, args...).Query(func(rows pgx.Rows) error {
		var err error
		all, err = pgx.CollectRows(rows, scanRecordRow)
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("records of %s: %w", sub, err)
	}
	return check(records(sub, all))
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
