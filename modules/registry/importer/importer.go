// Package importer moves the gateways of the original WebThings
// registration server (WebThingsIO/registration_server) into a Gatehouse
// registry: names, tokens (hashed, and sealed when a key is given),
// emails with their verified and opt-out flags, and modes, so that every
// gateway in the field keeps working against the new cloud unchanged.
//
// It reads the original's final schema (tables accounts and domains, after
// its 2019-08-09 migration) from SQLite or PostgreSQL through database/sql
// and writes through registry.Store. It knows nothing of Caddy.
package importer

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	// The drivers of the two databases the original server runs on.
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Errors of the import as a whole (a bad row is only reported).
var (
	ErrBadSource = errors.New("source must be sqlite:PATH or postgres:DSN")
	ErrSchema    = errors.New("not an original registration server database")
)

// Source is an open original-server database.
type Source struct {
	db      *sql.DB
	dialect string // "sqlite" or "postgres"
}

// Open opens from, "sqlite:PATH" or "postgres:DSN" (a URL or key=value
// DSN). A SQLite file is opened read-only: the import never writes to
// the original.
func Open(from string) (*Source, error) {
	kind, arg, ok := strings.Cut(from, ":")
	if !ok || arg == "" {
		return nil, ErrBadSource
	}
	var db *sql.DB
	var err error
	switch kind {
	case "sqlite":
		db, err = sql.Open("sqlite", "file:"+arg+"?mode=ro&_pragma=busy_timeout(5000)")
	case "postgres", "postgresql":
		kind = "postgres"
		if strings.HasPrefix(arg, "//") {
			// postgres://… was cut at its scheme's colon.
			arg = "postgres:" + arg
		}
		db, err = sql.Open("pgx", arg)
	default:
		return nil, ErrBadSource
	}
	if err != nil {
		return nil, fmt.Errorf("open %s source: %w", kind, err)
	}
	return &Source{db: db, dialect: kind}, nil
}

// Close closes the source database.
func (s *Source) Close() error { return s.db.Close() }

// Options configure an import.
type Options struct {
	// Zone is the Gatehouse zone; the original stores "name.ZONE." and
	// rows of another zone are skipped.
	Zone string
	// Names checks names against this cloud's rules (reserved names).
	Names *registry.Names
	// Sealer, when set, seals each imported token for PageKite.
	Sealer *registry.Sealer
}

// Skip is a row the import did not take, and why.
type Skip struct {
	Row    string // the original's domain name
	Reason string
}

// Report says what an import did. Running it again imports nothing new:
// a gateway already present with the same token counts as Unchanged.
type Report struct {
	Imported  int
	Unchanged int
	Skipped   []Skip
	// Notes are rows taken with a loss (an invalid email left out, a
	// description shortened).
	Notes []Skip
}

// row is one domain of the original with its account.
type row struct {
	name, token, description, lastIP, email string
	timestamp                               int64
	verified, optOut                        bool
	mode                                    int
}

// The original's final schema: accounts(id, email, optout) and domains(…,
// mode, last_ip). The unknown account (an empty email) owns domains without one.
const selectRows = `SELECT d.name, d.token, d.description, d.timestamp, d.verified, d.mode, d.last_ip,
	coalesce(a.email, ''), coalesce(a.optout, false)
	FROM domains d LEFT JOIN accounts a ON a.id = d.account_id ORDER BY d.id`

// Import copies every domain of src into store. A row it cannot take is
// reported in the Report and skipped; an error means the import stopped
// (the rows before it are in, and a second run continues).
func Import(ctx context.Context, src *Source, store registry.Store, opt Options) (*Report, error) {
	zone := strings.ToLower(strings.TrimSuffix(opt.Zone, "."))
	if zone == "" {
		return nil, fmt.Errorf("import: zone required: %w", registry.ErrInvalidInput)
	}
	names := opt.Names
	if names == nil {
		names = registry.NewNames(nil)
	}
	rows, err := src.db.QueryContext(ctx, selectRows)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSchema, err)
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.name, &r.token, &r.description, &r.timestamp, &r.verified, &r.mode, &r.lastIP, &r.email, &r.optOut); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("%w: %w", ErrSchema, err)
		}
		all = append(all, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read domains: %w", err)
	}
	_ = rows.Close()

	rep := &Report{}
	for _, r := range all {
		if err := importRow(ctx, store, names, opt.Sealer, zone, r, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func importRow(ctx context.Context, store registry.Store, names *registry.Names, sealer *registry.Sealer, zone string, r row, rep *Report) error {
	skip := func(format string, args ...any) error {
		rep.Skipped = append(rep.Skipped, Skip{Row: r.name, Reason: fmt.Sprintf(format, args...)})
		return nil
	}
	full := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(r.name), "."))
	name, ok := strings.CutSuffix(full, "."+zone)
	if !ok {
		return skip("not in the zone %s", zone)
	}
	if err := names.Check(name); err != nil {
		return skip("name refused here: %v", err)
	}
	if registry.CheckTokenSyntax(r.token) != nil {
		return skip("malformed token")
	}
	g := &registry.Gateway{
		Name:      name,
		TokenHash: registry.HashToken(r.token),
		Mode:      registry.ModeTunnel,
		Created:   time.Now().UTC(),
	}
	switch r.mode {
	case 0:
	case 1:
		g.Mode = registry.ModeDynamic
	default:
		return skip("unknown mode %d", r.mode)
	}
	g.Description = cleanDescription(r.description, func(why string) {
		rep.Notes = append(rep.Notes, Skip{Row: r.name, Reason: why})
	})
	if r.timestamp > 0 {
		// The original's timestamp is its last ping (or the
		// registration), in seconds: it lets the sweeper expire gateways
		// that were already silent.
		g.LastPing = time.Unix(r.timestamp, 0).UTC()
		g.Created = g.LastPing
	}
	if ip, err := netip.ParseAddr(r.lastIP); err == nil && ip.Unmap().Is4() {
		g.PublicV4 = ip.Unmap()
	}
	email := strings.TrimSpace(r.email)
	if email != "" && registry.CheckEmail(email) != nil {
		rep.Notes = append(rep.Notes, Skip{Row: r.name, Reason: fmt.Sprintf("email %q left out: not a valid address", email)})
		email = ""
	}
	g.EmailVerified = email != "" && r.verified

	existing, err := store.Gateway(ctx, name)
	switch {
	case err == nil:
		if !bytes.Equal(existing.TokenHash, g.TokenHash) {
			return skip("%s is already registered here with another token", name)
		}
		rep.Unchanged++
	case errors.Is(err, registry.ErrNotFound):
		if err := store.CreateGateway(ctx, g, email); errors.Is(err, registry.ErrNameTaken) {
			return skip("%s was registered here during the import", name)
		} else if err != nil {
			return fmt.Errorf("import %s: %w", name, err)
		}
		if email != "" && r.optOut {
			if err := store.SetAccountOptOut(ctx, g.AccountID, true); err != nil {
				return fmt.Errorf("import %s: %w", name, err)
			}
		}
		rep.Imported++
	default:
		return fmt.Errorf("import %s: %w", name, err)
	}
	if sealer != nil {
		if err := store.SealToken(ctx, name, g.TokenHash, sealer.Seal(name, r.token)); err != nil {
			return fmt.Errorf("seal %s: %w", name, err)
		}
	}
	return nil
}

const maxDescription = 256

// cleanDescription keeps what the registry accepts: UTF-8 without control
// characters, at most maxDescription bytes.
func cleanDescription(s string, note func(string)) string {
	orig := s
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	for len(s) > maxDescription {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	if s != orig {
		note("description cleaned (control characters, invalid UTF-8 or over 256 bytes)")
	}
	return s
}
