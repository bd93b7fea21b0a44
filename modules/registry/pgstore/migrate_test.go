package pgstore

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/storetest"
)

// TestUpgradeFromV1 builds a schema as the first release left it, with
// data, and checks that Open upgrades it in place and keeps the data.
func TestUpgradeFromV1(t *testing.T) {
	ctx := t.Context()
	dsn, schema := tempSchema(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, pool, schema, migrations[:1]); err != nil {
		t.Fatalf("migrate to v1: %v", err)
	}
	created := time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO accounts (id, email, optout, created) VALUES (7, 'old@example.org', true, $1)`, []any{created}},
		{`INSERT INTO gateways (name, token_hash, mode, description, account_id, public_v4, created)
			VALUES ('legacy', $1, 'dynamic', 'from v1', 7, '198.51.100.7', $2)`, []any{registry.HashToken("legacy"), created}},
		{`INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
			VALUES ('legacy', '_acme-challenge', 'TXT', 'abc', 60, $1)`, []any{created}},
	} {
		if _, err := pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'gateways_public_v4'`, schema).Scan(&n); err != nil || n != 0 {
		t.Fatalf("v1 already has the v2 index (%d, %v)", n, err)
	}
	pool.Close()

	s := openIn(t, dsn, schema)
	var version, steps int
	if err := s.pool.QueryRow(ctx, `SELECT max(version), count(*) FROM schema_migrations`).Scan(&version, &steps); err != nil {
		t.Fatal(err)
	}
	if version != currentVersion || steps != len(migrations) {
		t.Errorf("schema at version %d after %d steps, want %d after %d", version, steps, currentVersion, len(migrations))
	}
	rows, _ := s.pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE schemaname = $1`, schema)
	indexes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gateways_public_v4", "gateways_public_v6", "records_prune"} {
		if !slices.Contains(indexes, want) {
			t.Errorf("index %s missing after upgrade; have %s", want, strings.Join(indexes, ", "))
		}
	}

	g, err := s.Gateway(ctx, "legacy")
	if err != nil {
		t.Fatalf("Gateway(legacy) after upgrade: %v", err)
	}
	if g.Mode != registry.ModeDynamic || g.Description != "from v1" || g.AccountID != 7 || g.Email != "old@example.org" ||
		!g.OptOut || g.PublicV4 != netip.MustParseAddr("198.51.100.7") || !g.Created.Equal(created) {
		t.Errorf("Gateway(legacy) after upgrade = %+v", g)
	}
	if gs, err := s.GatewaysByPublicIP(ctx, netip.MustParseAddr("198.51.100.7")); err != nil || len(gs) != 1 {
		t.Errorf("GatewaysByPublicIP after upgrade = %v, %v", gs, err)
	}
	recs, err := s.Records(ctx, registry.GatewaySubtree("legacy"))
	if err != nil || len(recs) != 1 || recs[0].Value != "abc" || recs[0].TTL != time.Minute {
		t.Errorf("Records(legacy) after upgrade = %+v, %v", recs, err)
	}

	// A second node opening the up-to-date schema runs nothing more.
	openIn(t, dsn, schema)
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&steps); err != nil || steps != len(migrations) {
		t.Errorf("second Open: %d migration rows, %v", steps, err)
	}
}

// TestConcurrentOpen starts several nodes on a new schema at once: the
// advisory lock must let exactly one of them create each version.
func TestConcurrentOpen(t *testing.T) {
	dsn, schema := tempSchema(t)
	errs := make(chan error, 4)
	stores := make(chan *Store, 4)
	for range 4 {
		go func() {
			s, err := Open(t.Context(), dsn, WithSchema(schema))
			errs <- err
			stores <- s
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
		if s := <-stores; s != nil {
			defer s.Close()
		}
	}
}

// TestRefusesNewerSchema keeps an old binary from writing to a schema that
// a newer one has changed in ways it does not know.
func TestRefusesNewerSchema(t *testing.T) {
	ctx := t.Context()
	dsn, schema := tempSchema(t)
	s := openIn(t, dsn, schema)
	if _, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, currentVersion+1); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(ctx, dsn, WithSchema(schema)); err == nil {
		s.Close()
		t.Fatal("Open accepted a schema from a newer version")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open error = %v", err)
	}
}

// TestUpgradeFromV3 builds a schema with the zone's own records in their
// former table and checks that Open moves them into the zone's subtree of
// records in place, with the gateways' records and identities intact.
func TestUpgradeFromV3(t *testing.T) {
	ctx := t.Context()
	dsn, schema := tempSchema(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, pool, schema, migrations[:3]); err != nil {
		t.Fatalf("migrate to v3: %v", err)
	}
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, q := range []string{
		`INSERT INTO gateways (name, token_hash, mode, created) VALUES ('home', '\x01', 'tunnel', $1)`,
		`INSERT INTO records (gateway, owner, type, value, ttl_seconds, created) VALUES ('home', '_acme-challenge', 'TXT', 'gw', 60, $1)`,
		`INSERT INTO zone_records (owner, type, value, ttl_seconds, created) VALUES ('_acme-challenge', 'TXT', 'zone-1', 60, $1)`,
		`INSERT INTO zone_records (owner, type, value, ttl_seconds, created) VALUES ('_acme-challenge', 'TXT', 'zone-2', 120, $1::timestamptz + interval '1 second')`,
	} {
		if _, err := pool.Exec(ctx, q, created); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	pool.Close()

	s := openIn(t, dsn, schema)
	zone, err := s.Records(ctx, registry.ZoneSubtree())
	if err != nil || len(zone) != 2 || zone[0].Value != "zone-1" || zone[1].Value != "zone-2" || zone[1].TTL != 2*time.Minute ||
		!zone[0].Created.Equal(created) || zone[0].Subtree != registry.ZoneSubtree() {
		t.Fatalf("zone records after upgrade = %+v, %v", zone, err)
	}
	gw, err := s.Records(ctx, registry.GatewaySubtree("home"))
	if err != nil || len(gw) != 1 || gw[0].Value != "gw" {
		t.Fatalf("gateway records after upgrade = %+v, %v", gw, err)
	}
	if err := s.AppendRecords(ctx, registry.ZoneSubtree(), []registry.Record{zone[0]}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	if zone, _ := s.Records(ctx, registry.ZoneSubtree()); len(zone) != 2 {
		t.Errorf("an identical zone record was stored twice: %+v", zone)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
		VALUES ('nobody', 'x', 'TXT', 'v', 60, now())`); err == nil {
		t.Error("a record of an unknown gateway was accepted after the upgrade")
	}
	if err := s.DeleteGateway(ctx, "home"); err != nil {
		t.Fatal(err)
	}
	if zone, _ := s.Records(ctx, registry.ZoneSubtree()); len(zone) != 2 {
		t.Errorf("zone records after DeleteGateway = %+v", zone)
	}
}

// TestUpgradeFromV6 opens a schema as version 6 left it: its gateway gets
// no allowfrom (any address) and can claim custom domains.
func TestUpgradeFromV6(t *testing.T) {
	ctx := t.Context()
	dsn, schema := tempSchema(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, pool, schema, migrations[:6]); err != nil {
		t.Fatalf("migrate to v6: %v", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO gateways (name, token_hash, mode, created) VALUES ('old', $1, 'tunnel', now())`,
		registry.HashToken("old")); err != nil {
		t.Fatal(err)
	}
	pool.Close()

	s := openIn(t, dsn, schema)
	storetest.UpgradedFromV6(t, s)
}
