// Package teststore opens real registry stores for tests: a SQLite file in
// a temporary folder, and PostgreSQL in a schema of its own that is dropped
// when the test ends.
package teststore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/pgstore"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

// Drivers are the store drivers every store-backed test runs against.
var Drivers = []string{"sqlite", "postgres"}

// ForEach runs fn as a subtest for each driver.
func ForEach(t *testing.T, fn func(t *testing.T, driver string)) {
	for _, d := range Drivers {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}

// Open opens a fresh, empty store of the driver, closed at the end of t.
func Open(t testing.TB, driver string) registry.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s registry.Store
	var err error
	switch driver {
	case "sqlite":
		s, err = sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	case "postgres":
		dsn, schema := Postgres(t)
		s, err = pgstore.Open(ctx, dsn, pgstore.WithSchema(schema))
	default:
		t.Fatalf("unknown driver %q", driver)
	}
	if err != nil {
		t.Fatalf("open %s store: %v", driver, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Postgres returns the test server's DSN and a fresh schema name that is
// dropped at the end of t.
func Postgres(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn = testtools.PostgresDSN(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema = "gh_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	return dsn, schema
}
