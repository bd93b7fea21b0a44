package registry

import (
	"context"
	"errors"
)

// The read-only views below let the cloud node and the Caddy adapters use
// the Registry alone, never reaching around it to the Store: one place
// decides what a read means (and, for a future cache or a remote
// registry, one place to change).

// Gateway returns the named gateway or ErrNotFound.
func (r *Registry) Gateway(ctx context.Context, name string) (*Gateway, error) {
	return r.store.Gateway(ctx, name)
}

// Exists reports whether name is registered. An error means the store
// could not say.
func (r *Registry) Exists(ctx context.Context, name string) (bool, error) {
	_, err := r.store.Gateway(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ForEachGateway calls fn for every gateway with its records, to load an
// in-memory index; fn must not call the registry.
func (r *Registry) ForEachGateway(ctx context.Context, fn func(g *Gateway, recs []Record) error) error {
	return r.store.ForEachGateway(ctx, fn)
}

// Changes delivers the subtrees that other processes sharing the store
// changed, ResyncAll after changes may have been missed (see
// Store.Changes); nil for an unshared store.
func (r *Registry) Changes(ctx context.Context) (<-chan Subtree, error) {
	return r.store.Changes(ctx)
}
