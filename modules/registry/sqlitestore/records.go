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

func (r recordRow) record(s registry.Subtree) registry.Record {
	return registry.Record{
		Subtree: s,
		Owner:   r.owner.String,
		Type:    r.rtype.String,
		Value:   r.value.String,
		TTL:     time.Duration(r.ttl.Int64) * time.Second,
		Created: time.Unix(0, r.created.Int64).UTC(),
	}
}

func records(s registry.Subtree, rows []recordRow) []registry.Record {
	out := make([]registry.Record, len(rows))
	for i, r := range rows {
		out[i] = r.record(s)
	}
	return out
}

// subtreeKey is a subtree's value in records.gateway: the gateway's name,
// or NULL for the zone's own records, which belong to no gateway. NULL
// cannot collide with a name, and the foreign key to gateways ignores it.
func subtreeKey(s registry.Subtree) (key sql.NullString, err error) {
	if s.IsZone() {
		return sql.NullString{}, nil
	}
	name, ok := s.Gateway()
	if !ok {
		return key, registry.ErrNoSubtree
	}
	return sql.NullString{String: name, Valid: true}, nil
}

// subtreeWhere is the condition selecting a subtree's rows of records,
// written so that each form uses its index.
func subtreeWhere(key sql.NullString) (string, []any) {
	if !key.Valid {
		return `gateway IS NULL`, nil
	}
	return `gateway = ?`, []any{key.String}
}

// Records returns the subtree's records, oldest first.
func (s *Store) Records(ctx context.Context, sub registry.Subtree) ([]registry.Record, error) {
	key, err := subtreeKey(sub)
	if err != nil {
		return nil, err
	}
	if !key.Valid {
		rows, err := s.reader.QueryContext(ctx, `SELECT id, owner, type, value, ttl_seconds, created
			FROM records WHERE gateway IS NULL ORDER BY created, id`)
		if err != nil {
			return nil, fmt.Errorf("records of %s: %w", sub, err)
		}
		got, err := scanRecordRows(rows)
		if err != nil {
			return nil, fmt.Errorf("records of %s: %w", sub, err)
		}
		return records(sub, got), nil
	}
	gateway := key.String
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
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := subtreeExists(ctx, tx, key); err != nil {
			return err
		}
		if err := insertRecords(ctx, tx, key, recs); err != nil {
			return err
		}
		return checkRecords(ctx, tx, sub, key, check)
	})
}

// SetRecords replaces every RRset named in recs.
func (s *Store) SetRecords(ctx context.Context, sub registry.Subtree, recs []registry.Record, check registry.RecordCheck) error {
	key, err := subtreeKey(sub)
	if err != nil {
		return err
	}
	where, args := subtreeWhere(key)
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := subtreeExists(ctx, tx, key); err != nil {
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
			if _, err := tx.ExecContext(ctx, `DELETE FROM records WHERE `+where+` AND owner = ? AND type = ?`,
				append(slices.Clone(args), r.Owner, r.Type)...); err != nil {
				return fmt.Errorf("clear %s %q %s: %w", sub, r.Owner, r.Type, err)
			}
		}
		if err := insertRecords(ctx, tx, key, recs); err != nil {
			return err
		}
		return checkRecords(ctx, tx, sub, key, check)
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
	err = s.write(ctx, func(tx *sql.Tx) error {
		if err := subtreeExists(ctx, tx, key); err != nil {
			return err
		}
		var err error
		removed, err = deleteFiltered(ctx, tx, `DELETE FROM records WHERE `+where, args, filters)
		if err != nil {
			return fmt.Errorf("delete records of %s: %w", sub, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return records(sub, removed), nil
}

// PruneRecords deletes stale records of one owner and type everywhere.
func (s *Store) PruneRecords(ctx context.Context, owner, rtype string, cutoff time.Time) ([]registry.Subtree, error) {
	var subtrees []registry.Subtree
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM records WHERE owner = ? AND type = ? AND created < ?
			RETURNING gateway`, owner, rtype, cutoff.UnixNano())
		if err != nil {
			return fmt.Errorf("prune records: %w", err)
		}
		defer rows.Close()
		seen := map[registry.Subtree]bool{}
		for rows.Next() {
			var key sql.NullString
			if err := rows.Scan(&key); err != nil {
				return fmt.Errorf("prune records: %w", err)
			}
			sub := registry.ZoneSubtree()
			if key.Valid {
				sub = registry.GatewaySubtree(key.String)
			}
			if !seen[sub] {
				seen[sub] = true
				subtrees = append(subtrees, sub)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("prune records: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(subtrees, func(a, b registry.Subtree) int { return cmp.Compare(a.String(), b.String()) })
	return subtrees, nil
}

// subtreeExists returns registry.ErrNotFound for an unknown gateway, which
// the records' foreign key would otherwise report as a constraint failure.
// The zone's subtree always exists.
func subtreeExists(ctx context.Context, tx *sql.Tx, key sql.NullString) error {
	if !key.Valid {
		return nil
	}
	return gatewayExists(ctx, tx, key.String)
}

// checkRecords reads the subtree's records as the transaction left them
// and hands them to check; its error makes the caller write nothing.
func checkRecords(ctx context.Context, tx *sql.Tx, sub registry.Subtree, key sql.NullString, check registry.RecordCheck) error {
	where, args := subtreeWhere(key)
	rows, err := tx.QueryContext(ctx, `SELECT id, owner, type, value, ttl_seconds, created FROM records WHERE `+where+`
		ORDER BY created, id`, args...)
	if err != nil {
		return fmt.Errorf("records of %s: %w", sub, err)
	}
	got, err := scanRecordRows(rows)
	if err != nil {
		return fmt.Errorf("records of %s: %w", sub, err)
	}
	return check(records(sub, got))
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

// insertRecords adds recs to the subtree keyed key, skipping any
// identical to one already stored (records_identity for a gateway's,
// records_zone_identity for the zone's). A zero Created is set to now.
func insertRecords(ctx context.Context, tx *sql.Tx, key sql.NullString, recs []registry.Record) error {
	if len(recs) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
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
		if _, err := stmt.ExecContext(ctx, key, r.Owner, r.Type, r.Value, ttlSeconds(r.TTL), created.UnixNano()); err != nil {
			return fmt.Errorf("insert record %s %q %s: %w", key.String, r.Owner, r.Type, err)
		}
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
