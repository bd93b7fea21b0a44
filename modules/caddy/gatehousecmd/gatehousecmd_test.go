package gatehousecmd

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"github.com/spf13/cobra"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "modernc.org/sqlite"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

const tok = "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b"

// originalDB writes an original registration server's SQLite database
// with one gateway of the zone and one of another zone.
func originalDB(t *testing.T) string {
	t.Helper()
	schema, err := os.ReadFile("../../registry/importer/testdata/original-schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "original.sqlite3")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	comment := regexp.MustCompile(`(?m)^--.*$`)
	stmts := strings.Split(comment.ReplaceAllString(string(schema), ""), ";")
	stmts = append(stmts,
		`INSERT INTO accounts (id, email, optout) VALUES (1, 'owner@example.com', FALSE)`,
		`INSERT INTO domains (id, name, account_id, token, description, timestamp, verified) VALUES
			(1, 'home.box.example.org.', 1, '`+tok+`', 'home', 1700000000, TRUE),
			(2, 'far.example.net.', 1, '00000000-1111-4222-8333-444444444444', 'far', 1700000000, FALSE)`)
	for _, s := range stmts {
		if strings.TrimSpace(s) == "" {
			continue
		}
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%.60s: %v", s, err)
		}
	}
	return path
}

// The command as an operator runs it: the cloud's Caddyfile names the
// store and the seal key; the original's database is the only argument.
func TestImportCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GATEHOUSE_TEST_SEAL_KEY", hex.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	store := filepath.Join(dir, "registry.db")
	caddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(`{
	gatehouse {
		zone box.example.org
		storage sqlite `+store+`
		token_seal_key {env.GATEHOUSE_TEST_SEAL_KEY}
	}
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	from := "sqlite:" + originalDB(t)
	run := func() (string, error) {
		cmd := importCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"import-registration-server", "--from", from, "--config", caddyfile, "--adapter", "caddyfile"})
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := run()
	if !errors.Is(err, ErrRowsSkipped) || !strings.Contains(out, "skipped: far.example.net.: not in the zone box.example.org") ||
		!strings.Contains(out, "imported 1, already present 0, skipped 1") {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	out, err = run()
	if !errors.Is(err, ErrRowsSkipped) || !strings.Contains(out, "imported 0, already present 1, skipped 1") {
		t.Fatalf("second run: %v\n%s", err, out)
	}

	// The cloud, opened as the app would, knows the gateway by its old
	// token and can sign for its kite.
	s, err := sqlitestore.Open(t.Context(), store)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key, _ := registry.ParseSealKey(os.Getenv("GATEHOUSE_TEST_SEAL_KEY"))
	sealer, _ := registry.NewSealer(key)
	reg := registry.New(s, registry.Config{Sealer: sealer}, nil)
	reg.Start()
	defer reg.Stop()
	if g, err := reg.Ping(t.Context(), tok, netip.MustParseAddr("192.0.2.9"), nil); err != nil || g.Name != "home" || g.Email != "owner@example.com" || !g.EmailVerified {
		t.Fatalf("ping with the imported token: %+v %v", g, err)
	}
	if secret, err := reg.KiteSecret(t.Context(), "home"); err != nil || secret != tok {
		t.Fatalf("KiteSecret = %q, %v", secret, err)
	}
}

func TestImportCommandNeedsFrom(t *testing.T) {
	cmd := importCommand()
	cmd.SetOut(new(bytes.Buffer))
	cmd.SetErr(new(bytes.Buffer))
	cmd.SetArgs([]string{"import-registration-server"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--from is required") {
		t.Fatalf("without --from: %v", err)
	}
}

// importCommand is the subcommand under a parent with the persistent
// flags that gatehouseadmin's `caddy gatehouse` gives it.
func importCommand() *cobra.Command {
	parent := &cobra.Command{Use: "gatehouse", SilenceUsage: true}
	parent.PersistentFlags().StringP("config", "c", "", "")
	parent.PersistentFlags().StringP("adapter", "a", "", "")
	parent.AddCommand(ImportCommand())
	return parent
}
