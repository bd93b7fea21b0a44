// Package storagesqlite is the Caddy module gatehouse.storage.sqlite: the
// registry in one SQLite file, the embedded default.
package storagesqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/sqlitestore"
)

func init() {
	caddy.RegisterModule(SQLite{})
}

// ErrNoPath is returned by Validate without a path.
var ErrNoPath = errors.New("gatehouse: storage sqlite needs a path")

// SQLite opens the registry in a SQLite file (pure Go, WAL, one writer).
type SQLite struct {
	// Path is the database file; its folder is created. Placeholders are
	// resolved. Default: Caddy's data folder, gatehouse/registry.db.
	Path string `json:"path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (SQLite) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "gatehouse.storage.sqlite",
		New: func() caddy.Module { return new(SQLite) },
	}
}

// Provision resolves placeholders and applies the default path.
func (s *SQLite) Provision(caddy.Context) error {
	s.Path = caddy.NewReplacer().ReplaceKnown(s.Path, "")
	if s.Path == "" {
		s.Path = filepath.Join(caddy.AppDataDir(), "gatehouse", "registry.db")
	}
	return nil
}

// Validate checks the path.
func (s *SQLite) Validate() error {
	if s.Path == "" {
		return ErrNoPath
	}
	return nil
}

// OpenStore creates the folder and opens the store.
func (s *SQLite) OpenStore(ctx context.Context) (registry.Store, error) {
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return nil, fmt.Errorf("gatehouse: storage folder: %w", err)
	}
	st, err := sqlitestore.Open(ctx, s.Path)
	if err != nil {
		return nil, fmt.Errorf("gatehouse: opening sqlite store: %w", err)
	}
	return st, nil
}

// PingWorkers is 1: SQLite has one writer, and one batch at a time keeps
// the group commit's batches large.
func (s *SQLite) PingWorkers() int { return 1 }

// Interface guards.
var (
	_ caddy.Provisioner = (*SQLite)(nil)
	_ caddy.Validator   = (*SQLite)(nil)
)
