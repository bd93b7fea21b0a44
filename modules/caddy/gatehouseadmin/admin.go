// Package gatehouseadmin is the admin.api.gatehouse module: the operator's
// API (modules/adminapi) under /gatehouse/ on Caddy's admin endpoint, and
// the `caddy gatehouse` command that talks to it.
//
// It has no configuration: Caddy loads every admin.api module with its
// admin endpoint, which decides who may reach it (a local address or
// socket by default; remote administration with mTLS).
package gatehouseadmin

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/gatehouse-project/gatehouse/modules/adminapi"
	"github.com/gatehouse-project/gatehouse/modules/caddy/gatehouseapp"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

func init() {
	caddy.RegisterModule(Admin{})
	caddycmd.RegisterCommand(command())
}

// Admin mounts the operator's API on Caddy's admin endpoint.
type Admin struct {
	api *adminapi.API
}

// Interface guards.
var (
	_ caddy.AdminRouter = (*Admin)(nil)
	_ caddy.Provisioner = (*Admin)(nil)
)

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.gatehouse",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Provision sets up the API. The gatehouse app is not looked up here:
// Caddy provisions admin modules before the apps, and keeps the admin
// endpoint across reloads that do not change it, so each request finds
// the running app through the active context instead.
func (a *Admin) Provision(ctx caddy.Context) error {
	node, err := os.Hostname()
	if err != nil {
		node = "this node"
	}
	a.api = &adminapi.API{Backend: backend{}, Node: node, Log: ctx.Logger(a)}
	return nil
}

// Routes returns the API's one route; it routes below it itself.
func (a *Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: adminapi.Prefix,
		Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			a.api.ServeHTTP(w, r)
			return nil
		}),
	}}
}

// backend finds the running gatehouse app on each call.
type backend struct{}

func (backend) app() (*gatehouseapp.App, error) {
	v, err := caddy.ActiveContext().AppIfConfigured("gatehouse")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, adminapi.ErrNoRegistry
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", adminapi.ErrNoRegistry, err)
	}
	app, ok := v.(*gatehouseapp.App)
	if !ok || app.Registry() == nil {
		return nil, adminapi.ErrNoRegistry
	}
	return app, nil
}

func (b backend) Registry() (*registry.Registry, error) {
	app, err := b.app()
	if err != nil {
		return nil, err
	}
	return app.Registry(), nil
}

func (b backend) Online(name string) bool {
	app, err := b.app()
	if err != nil || app.Hub() == nil {
		return false
	}
	// In a cluster: held by any live node.
	_, ok := app.Tunnels().Lookup(name)
	return ok
}

func (b backend) OnlineNames() []string {
	app, err := b.app()
	if err != nil || app.Hub() == nil {
		return nil
	}
	if c := app.Node().Cluster(); c != nil {
		// Online anywhere in the cluster, as Online says.
		return slices.Collect(maps.Keys(c.Directory()))
	}
	return app.Hub().Names()
}

func (b backend) Holders(name string) []string {
	app, err := b.app()
	if err != nil || app.Hub() == nil {
		return nil
	}
	if c := app.Node().Cluster(); c != nil {
		return c.Holders(name)
	}
	return nil
}

func (b backend) Cluster() (string, map[string]int, bool) {
	app, err := b.app()
	if err != nil || app.Hub() == nil {
		return "", nil, false
	}
	c := app.Node().Cluster()
	if c == nil {
		return "", nil, false
	}
	return c.Name(), c.HeldCounts(), true
}
