package importer_test

import (
	"context"
	"database/sql"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/internal/testtools/teststore"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/importer"
)

const (
	zone     = "box.example.org"
	homeTok  = "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b"
	dynTok   = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
	otherTok = "00000000-1111-4222-8333-444444444444"
)

// original creates the original server's schema in db and fills it as
// that server would have: the unknown account (an empty email) owns gateways
// whose owner never gave an address.
func original(t *testing.T, db *sql.DB) {
	t.Helper()
	schema, err := os.ReadFile("testdata/original-schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	stmts := testtools.SQLStatements(string(schema))
	now := time.Now().Unix()
	stmts = append(stmts,
		`INSERT INTO accounts (id, email, optout) VALUES (1, 'owner@example.com', TRUE), (2, '', TRUE), (3, 'not an address', FALSE)`,
		`INSERT INTO domains (id, name, account_id, token, description, timestamp, verified, mode, last_ip, reclamation_token) VALUES
			(1, 'home.box.example.org.', 1, '`+homeTok+`', 'home''s server', `+itoa(now-3600)+`, TRUE, 0, '203.0.113.5', 'pending-reclaim'),
			(2, 'dyn.box.example.org.', 2, '`+dynTok+`', 'dyn', `+itoa(now)+`, FALSE, 1, '', ''),
			(3, 'far.example.net.', 1, '`+otherTok+`', 'x', `+itoa(now)+`, FALSE, 0, '', ''),
			(4, 'api.box.example.org.', 2, '11111111-1111-4111-8111-111111111111', 'x', `+itoa(now)+`, FALSE, 0, '', ''),
			(5, 'badtoken.box.example.org.', 2, 'not-a-uuid', 'x', `+itoa(now)+`, FALSE, 0, '', ''),
			(6, 'oddmode.box.example.org.', 2, '22222222-2222-4222-8222-222222222222', 'x', `+itoa(now)+`, FALSE, 7, '', ''),
			(7, 'typo.box.example.org.', 1, '33333333-3333-4333-8333-333333333333', 'x', `+itoa(now)+`, TRUE, 0, '', ''),
			(8, 'noted.box.example.org.', 3, '44444444-4444-4444-8444-444444444444', 'tab	in it', `+itoa(now)+`, TRUE, 0, '', '')`)
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%.60s: %v", s, err)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// source returns the "--from" argument of a fresh original database of
// the driver's kind.
func source(t *testing.T, driver string) string {
	t.Helper()
	switch driver {
	case "sqlite":
		path := filepath.Join(t.TempDir(), "original.sqlite3")
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		original(t, db)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		return "sqlite:" + path
	default:
		dsn, schema := teststore.Postgres(t)
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(context.Background(), "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		_ = conn.Close(context.Background())
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dsn += sep + "search_path=" + schema
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		original(t, db)
		_ = db.Close()
		return "postgres:" + dsn
	}
}

func TestImport(t *testing.T) {
	teststore.ForEach(t, func(t *testing.T, driver string) {
		ctx := t.Context()
		src, err := importer.Open(source(t, driver))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = src.Close() })
		store := teststore.Open(t, driver)
		sealer, err := registry.NewSealer(make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		// A name already taken here by someone else stays theirs.
		if err := store.CreateGateway(ctx, &registry.Gateway{Name: "typo", TokenHash: registry.HashToken("someone-else"), Mode: registry.ModeTunnel}, ""); err != nil {
			t.Fatal(err)
		}
		opt := importer.Options{Zone: zone + ".", Names: registry.NewNames(nil), Sealer: sealer}
		rep, err := importer.Import(ctx, src, store, opt)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Imported != 3 || rep.Unchanged != 0 {
			t.Fatalf("report %+v, want 3 imported", rep)
		}
		// Taken with a loss, and said so.
		if len(rep.Notes) != 2 || !strings.Contains(rep.Notes[0].Reason+rep.Notes[1].Reason, "not a valid address") {
			t.Fatalf("notes %+v", rep.Notes)
		}
		if g, err := store.Gateway(ctx, "noted"); err != nil || g.Email != "" || g.EmailVerified || g.Description != "tab in it" {
			t.Fatalf("noted imported as %+v, %v", g, err)
		}
		wantSkips(t, rep, map[string]string{
			"far.example.net.":          "not in the zone",
			"api.box.example.org.":      "name refused",
			"badtoken.box.example.org.": "malformed token",
			"oddmode.box.example.org.":  "unknown mode",
			"typo.box.example.org.":     "another token",
		})

		home, err := store.Gateway(ctx, "home")
		if err != nil {
			t.Fatal(err)
		}
		if home.Mode != registry.ModeTunnel || home.Email != "owner@example.com" || !home.EmailVerified || !home.OptOut ||
			home.Description != "home's server" || home.PublicV4 != netip.MustParseAddr("203.0.113.5") || home.LastPing.IsZero() {
			t.Fatalf("home imported as %+v", home)
		}
		if len(home.ReclaimTokenHash) != 0 {
			t.Fatal("a pending reclamation came along without an expiry")
		}
		dyn, err := store.Gateway(ctx, "dyn")
		if err != nil || dyn.Mode != registry.ModeDynamic || dyn.Email != "" || dyn.AccountID != 0 {
			t.Fatalf("dyn imported as %+v, %v", dyn, err)
		}

		// The gateway's token works as it did, and the kite's secret is
		// there at once.
		reg := registry.New(store, registry.Config{Sealer: sealer}, nil)
		reg.Start()
		t.Cleanup(reg.Stop)
		if g, err := reg.Ping(ctx, homeTok, netip.MustParseAddr("198.51.100.1"), nil); err != nil || g.Name != "home" {
			t.Fatalf("ping with the original token: %v, %v", g, err)
		}
		if s, err := reg.KiteSecret(ctx, "dyn"); err != nil || s != dynTok {
			t.Fatalf("KiteSecret(dyn) = %q, %v", s, err)
		}

		// Idempotent: a second run takes nothing new and reports the same.
		again, err := importer.Import(ctx, src, store, opt)
		if err != nil {
			t.Fatal(err)
		}
		if again.Imported != 0 || again.Unchanged != 3 || len(again.Skipped) != len(rep.Skipped) {
			t.Fatalf("second run: %+v", again)
		}
		if n, err := store.CountGateways(ctx); err != nil || n != 4 {
			t.Fatalf("%d gateways after two runs, want 4 (%v)", n, err)
		}
	})
}

func wantSkips(t *testing.T, rep *importer.Report, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, s := range rep.Skipped {
		got[s.Row] = s.Reason
	}
	for row, reason := range want {
		if !strings.Contains(got[row], reason) {
			t.Errorf("row %s: skipped with %q, want %q", row, got[row], reason)
		}
	}
	if len(got) != len(want) {
		t.Errorf("skipped %v, want %d rows", got, len(want))
	}
}

func TestOpenRefusesOtherSources(t *testing.T) {
	for _, s := range []string{"", "mysql:x", "sqlite:", "/path/only"} {
		if _, err := importer.Open(s); !errors.Is(err, importer.ErrBadSource) {
			t.Errorf("Open(%q): %v", s, err)
		}
	}
	src, err := importer.Open("sqlite:" + filepath.Join(t.TempDir(), "empty.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := importer.Import(t.Context(), src, teststore.Open(t, "sqlite"), importer.Options{Zone: zone}); !errors.Is(err, importer.ErrSchema) {
		t.Fatalf("an empty database: %v", err)
	}
}
