package gatehouseapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Offline is the gatehouse app's registry settings, resolved from a Caddy
// JSON config without starting the app: for commands that work on the
// store (the import of an original registration server's database).
type Offline struct {
	Zone   string
	Store  registry.Store
	Names  *registry.Names
	Sealer *registry.Sealer
}

// ErrNoApp: the config has no gatehouse app.
var ErrNoApp = errors.New("the config has no gatehouse app")

// OpenOffline reads the gatehouse app of cfg (Caddy JSON), resolves its
// placeholders as Provision does, and opens its store. Close the store.
func OpenOffline(ctx context.Context, cfg []byte) (*Offline, error) {
	var whole struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &whole); err != nil {
		return nil, fmt.Errorf("gatehouse: reading the config: %w", err)
	}
	raw, ok := whole.Apps["gatehouse"]
	if !ok {
		return nil, ErrNoApp
	}
	var a App
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("gatehouse: reading the gatehouse app: %w", err)
	}
	repl := caddy.NewReplacer()
	a.Zone = strings.ToLower(strings.TrimSuffix(repl.ReplaceKnown(a.Zone, ""), "."))
	if err := a.Validate(); err != nil {
		return nil, err
	}
	sealer, err := ParseSealKey(repl, a.TokenSealKey)
	if err != nil {
		return nil, err
	}
	reserved := a.Reserved
	if a.DNS != nil {
		if err := a.DNS.validate(a.Zone); err != nil {
			return nil, err
		}
		zc := a.DNS.Config
		zc.Zone = a.Zone
		reserved = append(append([]string{}, reserved...), zc.ReservedNames()...)
	}
	// A context of its own: the storage module is provisioned as the
	// running app's would be, with nothing else of Caddy started.
	cctx, cancel := caddy.NewContext(caddy.Context{Context: ctx})
	defer cancel()
	storage, err := a.loadStorage(cctx)
	if err != nil {
		return nil, err
	}
	store, err := storage.OpenStore(ctx)
	if err != nil {
		return nil, err
	}
	return &Offline{Zone: a.Zone, Store: store, Names: registry.NewNames(reserved), Sealer: sealer}, nil
}
