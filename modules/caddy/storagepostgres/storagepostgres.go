// Package storagepostgres is the Caddy module gatehouse.storage.postgres:
// the registry in PostgreSQL, which several cloud nodes can share (each
// follows the others' writes through notifications).
package storagepostgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/pgstore"
)

func init() {
	caddy.RegisterModule(Postgres{})
}

// ErrNoDSN is returned by Validate without a DSN.
var ErrNoDSN = errors.New("gatehouse: storage postgres needs a DSN")

// Postgres opens the registry in a PostgreSQL database.
type Postgres struct {
	// DSN is the connection string; placeholders such as
	// {env.GATEHOUSE_PG} are resolved.
	DSN string `json:"dsn,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Postgres) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "gatehouse.storage.postgres",
		New: func() caddy.Module { return new(Postgres) },
	}
}

// Provision resolves placeholders in the DSN.
func (p *Postgres) Provision(caddy.Context) error {
	p.DSN = caddy.NewReplacer().ReplaceKnown(p.DSN, "")
	return nil
}

// Validate checks that there is a DSN.
func (p *Postgres) Validate() error {
	if p.DSN == "" {
		return ErrNoDSN
	}
	return nil
}

// OpenStore connects and brings the schema up to date.
func (p *Postgres) OpenStore(ctx context.Context) (registry.Store, error) {
	st, err := pgstore.Open(ctx, p.DSN)
	if err != nil {
		return nil, fmt.Errorf("gatehouse: opening postgres store: %w", err)
	}
	return st, nil
}

// ClusterDSN is the DSN: a cluster of nodes keeps its tables in the
// registry's database.
func (p *Postgres) ClusterDSN() string { return p.DSN }

// PingWorkers is 4: the server commits several ping batches at once.
func (p *Postgres) PingWorkers() int { return 4 }

// Interface guards.
var (
	_ caddy.Provisioner = (*Postgres)(nil)
	_ caddy.Validator   = (*Postgres)(nil)
)
