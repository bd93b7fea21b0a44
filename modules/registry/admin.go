package registry

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrNoAdmin: the store does not implement AdminStore.
var ErrNoAdmin = errors.New("the store offers no operator functions")

// MaxListLimit bounds one page of ListGateways.
const MaxListLimit = 1000

// ListQuery selects gateways for the operator; empty fields match anything.
type ListQuery struct {
	// After is the keyset cursor: only names after it, in name order.
	After string
	// Limit is the page size, 1 to MaxListLimit (0: 100).
	Limit int
	// Name matches gateways whose name contains it.
	Name string
	// Email matches gateways whose account's address contains it.
	Email string
	// Addr matches gateways whose public or local address is it.
	Addr netip.Addr
	Mode Mode
	// Expired and Disabled, when set, must equal the gateway's flag.
	Expired  *bool
	Disabled *bool
}

// Check refuses a malformed query with ErrInvalidInput.
func (q *ListQuery) Check() error {
	if q.Limit == 0 {
		q.Limit = 100
	}
	if q.Limit < 0 || q.Limit > MaxListLimit {
		return fmt.Errorf("%w: limit must be 1 to %d", ErrInvalidInput, MaxListLimit)
	}
	if q.Mode != "" && !q.Mode.Valid() {
		return fmt.Errorf("%w: mode must be tunnel or dynamic", ErrInvalidInput)
	}
	for what, v := range map[string]string{"name": q.Name, "email": q.Email, "after": q.After} {
		if err := checkText(v, 254, what); err != nil {
			return err
		}
	}
	return nil
}

// Stats counts the registry's gateways.
type Stats struct {
	Registered int          `json:"registered"`
	Expired    int          `json:"expired"`
	Disabled   int          `json:"disabled"`
	ByMode     map[Mode]int `json:"by_mode"`
	Reserved   int          `json:"reserved"`
}

// Rows is what ScanStats reads: database/sql's *Rows and pgx's Rows both
// have these methods.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanStats sums the rows of a store's per-mode count, each
// (mode, gateways, expired, disabled): both stores answer Stats with one
// GROUP BY in their own dialect and read it here.
func ScanStats(rows Rows) (Stats, error) {
	st := Stats{ByMode: map[Mode]int{}}
	for rows.Next() {
		var (
			mode                 string
			n, expired, disabled int
		)
		if err := rows.Scan(&mode, &n, &expired, &disabled); err != nil {
			return st, fmt.Errorf("stats: %w", err)
		}
		st.ByMode[Mode(mode)] = n
		st.Registered += n
		st.Expired += expired
		st.Disabled += disabled
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("stats: %w", err)
	}
	return st, nil
}

// AdminStore is what the operator's tools need beyond Store. It is a
// separate interface so that stores (and test doubles) that serve only
// the public API need not implement it.
type AdminStore interface {
	// ListGateways returns one page of the gateways q selects, in name
	// order, with their accounts joined; the next page starts after the
	// last name returned.
	ListGateways(ctx context.Context, q ListQuery) ([]*Gateway, error)
	// Stats counts gateways (Reserved is filled by the caller).
	Stats(ctx context.Context) (Stats, error)
	// ReservedNames lists the names reserved at run time, sorted.
	ReservedNames(ctx context.Context) ([]string, error)
	// ReserveName adds name to the run-time reservations (idempotent).
	ReserveName(ctx context.Context, name string) error
	// ReleaseName removes name from them, or ErrNotFound.
	ReleaseName(ctx context.Context, name string) error
}

func (r *Registry) admin() (AdminStore, error) {
	a, ok := r.store.(AdminStore)
	if !ok {
		return nil, ErrNoAdmin
	}
	return a, nil
}

// ListGateways returns one page of gateways; see AdminStore.
func (r *Registry) ListGateways(ctx context.Context, q ListQuery) ([]*Gateway, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	a, err := r.admin()
	if err != nil {
		return nil, err
	}
	return a.ListGateways(ctx, q)
}

// Stats counts the gateways and the run-time reservations.
func (r *Registry) Stats(ctx context.Context) (Stats, error) {
	a, err := r.admin()
	if err != nil {
		return Stats{}, err
	}
	st, err := a.Stats(ctx)
	if err != nil {
		return Stats{}, err
	}
	names, err := a.ReservedNames(ctx)
	if err != nil {
		return Stats{}, err
	}
	st.Reserved = len(names)
	return st, nil
}

// SetDisabled disables or enables a gateway. Disabling revokes it: DNS
// drops the name, live tunnels close and its custom domains are no
// longer routed (their claims stay). Enabling brings its addresses,
// records and custom domains back.
func (r *Registry) SetDisabled(ctx context.Context, name string, disabled bool) (*Gateway, error) {
	g, err := r.store.UpdateGateway(ctx, name, func(g *Gateway) (*string, error) {
		g.Disabled = disabled
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	if disabled {
		r.emit(Event{Subtree: GatewaySubtree(name), Gateway: g, Revoked: true})
		return g, nil
	}
	// Reload, not emitRecords: the custom domains come back too.
	return g, r.Reload(ctx, GatewaySubtree(name))
}

// Delete removes a gateway and its records, whoever owns it.
func (r *Registry) Delete(ctx context.Context, name string) error {
	if err := r.store.DeleteGateway(ctx, name); err != nil {
		return err
	}
	r.emit(Event{Subtree: GatewaySubtree(name), Revoked: true})
	return nil
}

// RotateToken gives the gateway a new token, returned once; the old one
// stops working and live tunnels close, so the agent must be given the
// new token.
func (r *Registry) RotateToken(ctx context.Context, name string) (string, error) {
	token, hash := NewToken()
	g, err := r.store.UpdateGateway(ctx, name, func(g *Gateway) (*string, error) {
		g.TokenHash = hash
		return nil, nil
	})
	if err != nil {
		return "", err
	}
	r.emit(Event{Subtree: GatewaySubtree(name), Gateway: g, Revoked: true})
	return token, nil
}

// Reserve stops name from being registered. A registered name keeps its
// gateway: disable it to take it out of service.
func (r *Registry) Reserve(ctx context.Context, name string) error {
	if err := r.checkReservable(name); err != nil {
		return err
	}
	a, err := r.admin()
	if err != nil {
		return err
	}
	return a.ReserveName(ctx, name)
}

// Release makes a run-time reserved name available again; ErrNotFound if
// it was not reserved at run time (configured names cannot be released).
func (r *Registry) Release(ctx context.Context, name string) error {
	if r.names.Configured(name) {
		return fmt.Errorf("%w: %s is reserved by the configuration", ErrInvalidInput, name)
	}
	a, err := r.admin()
	if err != nil {
		return err
	}
	return a.ReleaseName(ctx, name)
}

// ReservedNames lists the run-time reservations.
func (r *Registry) ReservedNames(ctx context.Context) ([]string, error) {
	a, err := r.admin()
	if err != nil {
		return nil, err
	}
	return a.ReservedNames(ctx)
}

// checkReservable accepts what could be a gateway name: the syntax rules
// alone, since the point is to refuse it to others.
func (r *Registry) checkReservable(name string) error {
	err := NewNames(nil).Check(name)
	if err != nil && !errors.Is(err, ErrReservedName) {
		return err
	}
	if strings.TrimSpace(name) != name {
		return fmt.Errorf("%w: spaces", ErrInvalidName)
	}
	return nil
}

// ImportBatch is one transaction of an import: accounts first (gateways
// link to them by address), then gateways, records and reservations.
type ImportBatch struct {
	Accounts []Account
	// Gateways link to the account of their Email ("" for none);
	// AccountID is ignored, since ids are each store's own.
	Gateways []*Gateway
	// Records of gateways (which must exist, in this batch or before)
	// and of the zone.
	Records  []Record
	Reserved []string
	// Domains are custom domain claims of gateways that must exist, in
	// this batch or before.
	Domains []DomainClaim
}

// Counts counts the rows of a registry, or what an import inserted.
type Counts struct {
	Accounts int `json:"accounts"`
	Gateways int `json:"gateways"`
	Records  int `json:"records"`
	Reserved int `json:"reserved"`
	// Domains counts custom domain claims; omitted when none, so that
	// streams of registries without any read as before.
	Domains int `json:"domains,omitempty"`
}

// Add returns the sum of c and d.
func (c Counts) Add(d Counts) Counts {
	return Counts{c.Accounts + d.Accounts, c.Gateways + d.Gateways, c.Records + d.Records, c.Reserved + d.Reserved, c.Domains + d.Domains}
}

// Zero reports whether every count is 0.
func (c Counts) Zero() bool { return c == Counts{} }

// BackupStore is what export, import and migration need of a store.
type BackupStore interface {
	Store
	AdminStore
	// ForEachAccount calls fn for every account in address order.
	ForEachAccount(ctx context.Context, fn func(Account) error) error
	// Import inserts the batch in one transaction. Rows already present
	// (same account address, gateway name or token, record identity,
	// reserved name) are kept as they are, so that an interrupted import
	// can be run again.
	Import(ctx context.Context, b ImportBatch) (Counts, error)
	// Counts counts the rows an export would write.
	Counts(ctx context.Context) (Counts, error)
}
