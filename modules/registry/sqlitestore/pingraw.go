package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// rawConn is what the SQLite driver's connection offers below database/sql.
type rawConn interface {
	driver.ConnBeginTx
	driver.ConnPrepareContext
}

// pingBatchRaw runs PingBatch's statements on the driver connection itself.
// Pings are the hot path of the whole registry, and database/sql's
// per-statement bookkeeping (locks, retries, row wrappers, value
// conversion) cost about as much as SQLite's own work for these one-row
// UPDATEs; below it, one transaction of a batch is one lock of the writer.
func (s *Store) pingBatchRaw(ctx context.Context, pings []registry.PingRequest, results []registry.PingResult) error {
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c, ok := dc.(rawConn)
		if !ok {
			return fmt.Errorf("ping: driver connection %T lacks BeginTx/PrepareContext", dc)
		}
		if s.rawOwner != dc {
			// A new writer connection (the pool replaced a broken one):
			// statements prepared on the old one are gone with it.
			s.rawSame, s.rawMoved, s.rawOwner = nil, nil, dc
		}
		same, err := s.rawStmt(ctx, c, &s.rawSame, pingSameSQL)
		if err != nil {
			return err
		}
		moved, err := s.rawStmt(ctx, c, &s.rawMoved, pingMovedSQL)
		if err != nil {
			return err
		}
		tx, err := c.BeginTx(ctx, driver.TxOptions{})
		if err != nil {
			return fmt.Errorf("ping: begin: %w", err)
		}
		if err := pingRows(ctx, same, moved, pings, results); err != nil {
			return errors.Join(err, tx.Rollback())
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("ping: commit: %w", err)
		}
		return nil
	})
}

// rawStmt prepares query once on the writer's driver connection (the
// writer pool holds exactly one, kept open forever).
func (s *Store) rawStmt(ctx context.Context, c rawConn, slot *driver.Stmt, query string) (driver.StmtQueryContext, error) {
	if *slot == nil {
		st, err := c.PrepareContext(ctx, query)
		if err != nil {
			return nil, fmt.Errorf("ping: prepare: %w", err)
		}
		*slot = st
	}
	q, ok := (*slot).(driver.StmtQueryContext)
	if !ok {
		return nil, fmt.Errorf("ping: statement %T lacks QueryContext", *slot)
	}
	return q, nil
}

func pingRows(ctx context.Context, same, moved driver.StmtQueryContext, pings []registry.PingRequest, results []registry.PingResult) error {
	now := time.Now()
	values := make([]driver.Value, len(new(gatewayRow).dest())+1)
	args := make([]driver.NamedValue, 6)
	for i, p := range pings {
		results[i] = registry.PingResult{}
		if len(p.TokenHash) == 0 {
			results[i].Err = registry.ErrNotFound
			continue
		}
		at := p.At
		if at.IsZero() {
			at = now
		}
		for j, v := range []any{at.UnixNano(), addrArg(p.PublicV4), addrArg(p.PublicV6),
			boolArg(p.LocalAddrs != nil), listArg(p.LocalAddrs), p.TokenHash} {
			args[j] = driver.NamedValue{Ordinal: j + 1, Value: driverValue(v)}
		}
		found, err := queryOne(ctx, same, args, values)
		if err == nil && !found {
			found, err = queryOne(ctx, moved, args, values)
		}
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		if !found {
			results[i].Err = registry.ErrNotFound
			continue
		}
		var r gatewayRow
		var revived bool
		dest := append(r.dest(), &revived)
		for j := range dest {
			if err := assign(dest[j], values[j]); err != nil {
				return fmt.Errorf("ping: column %d: %w", j, err)
			}
		}
		g, err := r.gateway()
		results[i] = registry.PingResult{Gateway: g, WasExpired: revived, Err: err}
	}
	return nil
}

// queryOne runs st and reads its single row into values.
func queryOne(ctx context.Context, st driver.StmtQueryContext, args []driver.NamedValue, values []driver.Value) (bool, error) {
	rows, err := st.QueryContext(ctx, args)
	if err != nil {
		return false, err
	}
	err = rows.Next(values)
	cerr := rows.Close()
	if errors.Is(err, io.EOF) {
		return false, cerr
	}
	return err == nil, errors.Join(err, cerr)
}

// driverValue turns the store's argument forms into driver values.
func driverValue(v any) driver.Value {
	switch v := v.(type) {
	case nil:
		return nil
	case sql.NullString:
		if !v.Valid {
			return nil
		}
		return v.String
	case int:
		return int64(v)
	case bool:
		if v {
			return int64(1)
		}
		return int64(0)
	case driver.Valuer:
		dv, err := v.Value()
		if err != nil {
			return nil
		}
		return dv
	}
	return v
}

// assign stores a driver value into one of gatewayRow's destinations.
func assign(dest any, v driver.Value) error {
	switch d := dest.(type) {
	case sql.Scanner:
		return d.Scan(v)
	case *string:
		switch v := v.(type) {
		case string:
			*d = v
		case []byte:
			*d = string(v)
		default:
			return fmt.Errorf("%T into string", v)
		}
	case *[]byte:
		switch v := v.(type) {
		case nil:
			*d = nil
		case []byte:
			*d = append([]byte(nil), v...)
		case string:
			*d = []byte(v)
		default:
			return fmt.Errorf("%T into bytes", v)
		}
	case *int64:
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("%T into int64", v)
		}
		*d = n
	case *bool:
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("%T into bool", v)
		}
		*d = n != 0
	default:
		return fmt.Errorf("unsupported destination %T", dest)
	}
	return nil
}
