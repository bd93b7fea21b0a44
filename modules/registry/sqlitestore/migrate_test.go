package sqlitestore

import (
	"database/sql"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/storetest"
)

// TestUpgradeFromV1 builds a database as the first release left it, with
// data, and checks that Open upgrades it in place and keeps the data.
func TestUpgradeFromV1(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migrations[:1]); err != nil {
		t.Fatalf("migrate to v1: %v", err)
	}
	created := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO accounts (id, email, optout, created) VALUES (7, 'old@example.org', 1, ?)`, []any{created.UnixNano()}},
		{`INSERT INTO gateways (name, token_hash, mode, description, account_id, public_v4, created)
			VALUES ('legacy', ?, 'dynamic', 'from v1', 7, '198.51.100.7', ?)`, []any{registry.HashToken("legacy"), created.UnixNano()}},
		{`INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
			VALUES ('legacy', '_acme-challenge', 'TXT', 'abc', 60, ?)`, []any{created.UnixNano()}},
	} {
		if _, err := db.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open of a v1 database: %v", err)
	}
	defer s.Close()
	var version, steps int
	if err := s.reader.QueryRowContext(ctx, `SELECT max(version), count(*) FROM schema_migrations`).Scan(&version, &steps); err != nil {
		t.Fatal(err)
	}
	if version != currentVersion || steps != len(migrations) {
		t.Errorf("schema at version %d after %d steps, want %d after %d", version, steps, currentVersion, len(migrations))
	}
	var plan strings.Builder
	rows, err := s.reader.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT name FROM gateways WHERE public_v4 = '198.51.100.7'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(detail)
	}
	rows.Close()
	if !strings.Contains(plan.String(), "gateways_public_v4") {
		t.Errorf("lookup by public IP does not use the v2 index: %s", plan.String())
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
	s.Close()

	// Opening an up-to-date database runs nothing more.
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&steps); err != nil || steps != len(migrations) {
		t.Errorf("second Open: %d migration rows, %v", steps, err)
	}
	s.Close()
}

// TestRefusesNewerSchema keeps an old binary from writing to a database
// that a newer one has changed in ways it does not know.
func TestRefusesNewerSchema(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "future.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied) VALUES (?, 0)`, currentVersion+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(ctx, path); err == nil {
		s.Close()
		t.Fatal("Open accepted a database from a newer version")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open error = %v", err)
	}
}

// TestUpgradeFromV3 builds a database with the zone's own records in their
// former table and checks that Open moves them into the zone's subtree of
// records in place, with the gateways' records, identities and cascade
// intact.
func TestUpgradeFromV3(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "v3.db")
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migrations[:3]); err != nil {
		t.Fatalf("migrate to v3: %v", err)
	}
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, q := range []string{
		`INSERT INTO gateways (name, token_hash, mode, created) VALUES ('home', x'01', 'tunnel', ?)`,
		`INSERT INTO records (gateway, owner, type, value, ttl_seconds, created) VALUES ('home', '_acme-challenge', 'TXT', 'gw', 60, ?)`,
		`INSERT INTO zone_records (owner, type, value, ttl_seconds, created) VALUES ('_acme-challenge', 'TXT', 'zone-1', 60, ?)`,
		`INSERT INTO zone_records (owner, type, value, ttl_seconds, created) VALUES ('_acme-challenge', 'TXT', 'zone-2', 120, ?)`,
	} {
		if _, err := db.ExecContext(ctx, q, created.UnixNano()); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open of a v3 database: %v", err)
	}
	defer s.Close()
	zone, err := s.Records(ctx, registry.ZoneSubtree())
	if err != nil || len(zone) != 2 || zone[0].Value != "zone-1" || zone[1].Value != "zone-2" || zone[1].TTL != 2*time.Minute ||
		!zone[0].Created.Equal(created) || zone[0].Subtree != registry.ZoneSubtree() {
		t.Fatalf("zone records after upgrade = %+v, %v", zone, err)
	}
	gw, err := s.Records(ctx, registry.GatewaySubtree("home"))
	if err != nil || len(gw) != 1 || gw[0].Value != "gw" {
		t.Fatalf("gateway records after upgrade = %+v, %v", gw, err)
	}
	// The zone's identity index still keeps a value from being stored twice.
	again := zone[0]
	if err := s.AppendRecords(ctx, registry.ZoneSubtree(), []registry.Record{again}, registry.AtMost(10)); err != nil {
		t.Fatal(err)
	}
	if zone, _ := s.Records(ctx, registry.ZoneSubtree()); len(zone) != 2 {
		t.Errorf("an identical zone record was stored twice: %+v", zone)
	}
	// The foreign key and its cascade survived the rebuild.
	if _, err := s.writer.ExecContext(ctx, `INSERT INTO records (gateway, owner, type, value, ttl_seconds, created)
		VALUES ('nobody', 'x', 'TXT', 'v', 60, 0)`); err == nil {
		t.Error("a record of an unknown gateway was accepted after the upgrade")
	}
	if err := s.DeleteGateway(ctx, "home"); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM records WHERE gateway IS NOT NULL`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d gateway records left after DeleteGateway, %v", left, err)
	}
	if zone, _ := s.Records(ctx, registry.ZoneSubtree()); len(zone) != 2 {
		t.Errorf("zone records after DeleteGateway = %+v", zone)
	}
}

// TestUpgradeFromV6 opens a database as version 6 left it: its gateway
// gets no allowfrom (any address) and can claim custom domains.
func TestUpgradeFromV6(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "v6.db")
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migrations[:6]); err != nil {
		t.Fatalf("migrate to v6: %v", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO gateways (name, token_hash, mode, created) VALUES ('old', ?, 'tunnel', 1)`,
		registry.HashToken("old")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open of a v6 database: %v", err)
	}
	defer s.Close()
	storetest.UpgradedFromV6(t, s)
}
