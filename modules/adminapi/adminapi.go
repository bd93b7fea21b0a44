// Package adminapi is the operator's HTTP API over a registry: list and
// search gateways, show one, disable, enable, delete, rotate its token,
// reserve and release names, count, export and import. It knows nothing
// of Caddy: the admin.api.gatehouse module mounts it on Caddy's admin
// endpoint, which brings that endpoint's protections (a local socket or
// address by default, mTLS for remote administration).
//
// Every answer is JSON, errors included: {"error": NAME, "reason": TEXT}
// with the names of modules/apierror. Every change is logged as one
// structured event.
package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/registry"
	"github.com/gatehouse-project/gatehouse/modules/registry/backup"
)

// Prefix is where the API lives on the admin endpoint.
const Prefix = "/gatehouse/"

// ErrNoRegistry: no gatehouse app runs in this process.
var ErrNoRegistry = errors.New("no gatehouse app is running")

// Backend is what the API needs from the running cloud. Each request
// asks again, so that a config reload (a new registry) is seen at once.
type Backend interface {
	// Registry returns the running registry, or ErrNoRegistry.
	Registry() (*registry.Registry, error)
	// Online reports whether name has a live tunnel on this node.
	Online(name string) bool
	// OnlineNames lists the names with a live tunnel on this node, or in
	// a cluster on any live node.
	OnlineNames() []string
	// Holders lists the nodes holding name's tunnel, sorted, in a
	// cluster (from the node's in-memory directory); nil without one.
	Holders(name string) []string
	// Cluster returns this node's name in its cluster and how many
	// gateways each live node holds; ok is false without a cluster.
	Cluster() (self string, held map[string]int, ok bool)
}

// API serves the operator's requests.
type API struct {
	Backend Backend
	// Node names this node in answers ("online on NODE").
	Node string
	Log  *zap.Logger
}

// Gateway is a gateway as the operator sees it: no secret, not even a hash.
type Gateway struct {
	Name   string `json:"name"`
	Mode   string `json:"mode"`
	Online bool   `json:"online"`
	// Node is the node that holds its tunnel: this one when it does,
	// else the first of OnlineOn, every node holding one.
	Node          string       `json:"node,omitempty"`
	OnlineOn      []string     `json:"online_on,omitempty"`
	Disabled      bool         `json:"disabled"`
	Expired       bool         `json:"expired"`
	LastPing      *time.Time   `json:"last_ping,omitempty"`
	PublicV4      string       `json:"public_v4,omitempty"`
	PublicV6      string       `json:"public_v6,omitempty"`
	LocalAddrs    []netip.Addr `json:"local_addrs,omitempty"`
	Created       time.Time    `json:"created"`
	Email         string       `json:"email,omitempty"`
	EmailVerified bool         `json:"email_verified"`
	Description   string       `json:"description,omitempty"`
}

// List is one page of gateways; Next, when set, is the After of the next
// page.
type List struct {
	Gateways []Gateway `json:"gateways"`
	Next     string    `json:"next,omitempty"`
}

// Stats are the registry's counts and the live tunnels: Online counts the
// gateways online (on this node, or in a cluster on any node), Held how
// many gateways each live node of the cluster holds.
type Stats struct {
	registry.Stats
	Online int            `json:"online"`
	Node   string         `json:"node"`
	Held   map[string]int `json:"held,omitempty"`
}

func (a *API) view(g *registry.Gateway) Gateway {
	v := Gateway{
		Name: g.Name, Mode: string(g.Mode), Disabled: g.Disabled, Expired: g.Expired,
		LocalAddrs: g.LocalAddrs, Created: g.Created, Email: g.Email,
		EmailVerified: g.EmailVerified, Description: g.Description,
	}
	if !g.LastPing.IsZero() {
		lp := g.LastPing
		v.LastPing = &lp
	}
	if g.PublicV4.IsValid() {
		v.PublicV4 = g.PublicV4.String()
	}
	if g.PublicV6.IsValid() {
		v.PublicV6 = g.PublicV6.String()
	}
	if holders := a.Backend.Holders(g.Name); len(holders) > 0 {
		v.Online, v.OnlineOn, v.Node = true, holders, holders[0]
		if self, _, _ := a.Backend.Cluster(); slices.Contains(holders, self) {
			v.Node = self
		}
	} else if a.Backend.Online(g.Name) {
		v.Online, v.Node, v.OnlineOn = true, a.Node, []string{a.Node}
	}
	return v
}

// errorTable maps errors to statuses and names, the public API's names
// where one fits.
var errorTable = []struct {
	err    error
	status int
	name   string
}{
	{registry.ErrNotFound, http.StatusNotFound, apierror.NoSuchName},
	{registry.ErrInvalidName, http.StatusBadRequest, apierror.InvalidName},
	{registry.ErrReservedName, http.StatusBadRequest, apierror.UnavailableName},
	{registry.ErrInvalidInput, http.StatusBadRequest, apierror.BadRequest},
	{backup.ErrNotEmpty, http.StatusConflict, "NotEmpty"},
	{backup.ErrCorrupt, http.StatusBadRequest, apierror.BadRequest},
	{backup.ErrTruncated, http.StatusBadRequest, apierror.BadRequest},
	{backup.ErrVersion, http.StatusBadRequest, apierror.BadRequest},
	{ErrNoRegistry, http.StatusServiceUnavailable, "NoRegistry"},
	{registry.ErrNoAdmin, http.StatusNotImplemented, "NoAdmin"},
}

// Error is an answer's error: its status and JSON body.
type Error struct {
	Status int
	Body   apierror.Body
}

func (e *Error) Error() string { return e.Body.Reason }

func toError(err error) *Error {
	if nf := (*notFound)(nil); errors.As(err, &nf) {
		return &Error{http.StatusNotFound, apierror.Body{Error: apierror.NotFound, Reason: err.Error()}}
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return &Error{e.status, apierror.Body{Error: e.name, Reason: err.Error()}}
		}
	}
	return &Error{http.StatusInternalServerError, apierror.Body{Error: apierror.InternalError, Reason: err.Error()}}
}

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{registry.ErrInvalidInput}, args...)...)
}

// ServeHTTP answers one request under Prefix.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := a.serve(w, r); err != nil {
		e := toError(err)
		if e.Status >= 500 {
			a.Log.Error("admin request failed", zap.String("path", r.URL.Path), zap.Error(err))
		}
		writeJSON(w, e.Status, e.Body)
	}
}

func (a *API) serve(w http.ResponseWriter, r *http.Request) error {
	reg, err := a.Backend.Registry()
	if err != nil {
		return err
	}
	ctx := r.Context()
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, Prefix), "/")
	route := func(method string, n int) bool { return r.Method == method && len(parts) == n }
	switch {
	case parts[0] == "gateways" && route(http.MethodGet, 1):
		return a.list(ctx, w, r, reg)
	case parts[0] == "gateways" && route(http.MethodGet, 2):
		g, err := reg.Gateway(ctx, parts[1])
		if err != nil {
			return noSuchName(err, parts[1])
		}
		writeJSON(w, http.StatusOK, a.view(g))
		return nil
	case parts[0] == "gateways" && route(http.MethodDelete, 2):
		if err := reg.Delete(ctx, parts[1]); err != nil {
			return noSuchName(err, parts[1])
		}
		a.event(r, "gateway deleted", parts[1])
		writeJSON(w, http.StatusOK, map[string]string{"deleted": parts[1]})
		return nil
	case parts[0] == "gateways" && route(http.MethodPost, 3) && (parts[2] == "disable" || parts[2] == "enable"):
		disable := parts[2] == "disable"
		g, err := reg.SetDisabled(ctx, parts[1], disable)
		if err != nil {
			return noSuchName(err, parts[1])
		}
		a.event(r, "gateway "+parts[2]+"d", parts[1])
		writeJSON(w, http.StatusOK, a.view(g))
		return nil
	case parts[0] == "gateways" && route(http.MethodPost, 3) && parts[2] == "rotate-token":
		token, err := reg.RotateToken(ctx, parts[1])
		if err != nil {
			return noSuchName(err, parts[1])
		}
		a.event(r, "gateway token rotated", parts[1])
		writeJSON(w, http.StatusOK, map[string]string{"name": parts[1], "token": token})
		return nil
	case parts[0] == "reserved" && route(http.MethodGet, 1):
		names, err := reg.ReservedNames(ctx)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string][]string{"reserved": append([]string{}, names...)})
		return nil
	case parts[0] == "reserved" && route(http.MethodPut, 2):
		if err := reg.Reserve(ctx, parts[1]); err != nil {
			return err
		}
		a.event(r, "name reserved", parts[1])
		writeJSON(w, http.StatusOK, map[string]string{"reserved": parts[1]})
		return nil
	case parts[0] == "reserved" && route(http.MethodDelete, 2):
		if err := reg.Release(ctx, parts[1]); err != nil {
			return noSuchName(err, parts[1])
		}
		a.event(r, "name released", parts[1])
		writeJSON(w, http.StatusOK, map[string]string{"released": parts[1]})
		return nil
	case parts[0] == "stats" && route(http.MethodGet, 1):
		st, err := reg.Stats(ctx)
		if err != nil {
			return err
		}
		out := Stats{Stats: st, Online: len(a.Backend.OnlineNames()), Node: a.Node}
		if self, held, ok := a.Backend.Cluster(); ok {
			out.Node, out.Held = self, held
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	case parts[0] == "export" && route(http.MethodGet, 1):
		bs, ok := reg.Store().(registry.BackupStore)
		if !ok {
			return registry.ErrNoAdmin
		}
		w.Header().Set("Content-Type", "application/jsonl")
		tr, err := backup.Export(ctx, bs, w)
		if err != nil {
			// The status is sent: the stream lacks its trailer, which
			// is how an importer tells it is incomplete.
			a.Log.Error("export failed", zap.Error(err))
			return nil
		}
		a.event(r, "registry exported", "", zap.Int("gateways", tr.Counts.Gateways), zap.String("checksum", tr.Checksum))
		return nil
	case parts[0] == "import" && route(http.MethodPost, 1):
		bs, ok := reg.Store().(registry.BackupStore)
		if !ok {
			return registry.ErrNoAdmin
		}
		force := r.URL.Query().Get("force") == "true"
		tr, inserted, err := backup.Import(ctx, bs, r.Body, backup.ImportOptions{Force: force})
		if err != nil {
			return err
		}
		a.event(r, "registry imported", "", zap.Int("gateways", inserted.Gateways), zap.Int("records", inserted.Records),
			zap.String("checksum", tr.Checksum))
		// The running DNS and tunnels learn imported gateways at the
		// next start or reload.
		writeJSON(w, http.StatusOK, map[string]any{"inserted": inserted, "trailer": tr})
		return nil
	}
	return &notFound{path: r.URL.Path, method: r.Method}
}

type notFound struct{ path, method string }

func (e *notFound) Error() string { return "no admin route " + e.method + " " + e.path }

func noSuchName(err error, name string) error {
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: no gateway or reservation named %q", registry.ErrNotFound, name)
	}
	return err
}

// ParseQuery reads the list filters from a URL query.
func ParseQuery(v map[string][]string) (q registry.ListQuery, online *bool, err error) {
	get := func(k string) string {
		if vs := v[k]; len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	for k := range v {
		if !slices.Contains([]string{"after", "limit", "name", "email", "addr", "mode", "expired", "disabled", "online"}, k) {
			return q, nil, badRequest("unknown filter %q", k)
		}
	}
	q.After, q.Name, q.Email, q.Mode = get("after"), get("name"), get("email"), registry.Mode(get("mode"))
	if s := get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit <= 0 {
			return q, nil, badRequest("limit %q is not a positive number", s)
		}
	}
	if s := get("addr"); s != "" {
		if q.Addr, err = netip.ParseAddr(s); err != nil {
			return q, nil, badRequest("addr %q is not an IP address", s)
		}
	}
	flag := func(k string) (*bool, error) {
		s := get(k)
		if s == "" {
			return nil, nil
		}
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, badRequest("%s=%q is neither true nor false", k, s)
		}
		return &b, nil
	}
	if q.Expired, err = flag("expired"); err != nil {
		return q, nil, err
	}
	if q.Disabled, err = flag("disabled"); err != nil {
		return q, nil, err
	}
	if online, err = flag("online"); err != nil {
		return q, nil, err
	}
	return q, online, q.Check()
}

func (a *API) list(ctx context.Context, w http.ResponseWriter, r *http.Request, reg *registry.Registry) error {
	q, online, err := ParseQuery(r.URL.Query())
	if err != nil {
		return err
	}
	var out List
	if online != nil && *online {
		// The live tunnels are in memory, far fewer than the gateways:
		// page over them and read each from the store.
		names := a.Backend.OnlineNames()
		slices.Sort(names)
		for _, name := range names {
			if name <= q.After {
				continue
			}
			g, err := reg.Gateway(ctx, name)
			if errors.Is(err, registry.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if matches(g, q) {
				out.Gateways = append(out.Gateways, a.view(g))
			}
			if len(out.Gateways) == q.Limit {
				out.Next = name
				break
			}
		}
	} else {
		// Offline only: filter the store's pages, reading more until one
		// is full or the store has no more.
		after := q.After
		for {
			q.After = after
			gs, err := reg.ListGateways(ctx, q)
			if err != nil {
				return err
			}
			for _, g := range gs {
				after = g.Name
				v := a.view(g)
				if online != nil && v.Online {
					continue
				}
				out.Gateways = append(out.Gateways, v)
				if len(out.Gateways) == q.Limit {
					break
				}
			}
			if len(out.Gateways) == q.Limit {
				out.Next = after
				break
			}
			if len(gs) < q.Limit {
				break
			}
		}
	}
	if out.Gateways == nil {
		out.Gateways = []Gateway{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// matches applies the store's filters to one gateway read by name.
func matches(g *registry.Gateway, q registry.ListQuery) bool {
	if q.Name != "" && !strings.Contains(g.Name, strings.ToLower(q.Name)) {
		return false
	}
	if q.Email != "" && !strings.Contains(strings.ToLower(g.Email), strings.ToLower(q.Email)) {
		return false
	}
	if q.Addr.IsValid() && g.PublicV4 != q.Addr.Unmap() && g.PublicV6 != q.Addr && !slices.Contains(g.LocalAddrs, q.Addr.Unmap()) {
		return false
	}
	if q.Mode != "" && g.Mode != q.Mode {
		return false
	}
	if q.Expired != nil && g.Expired != *q.Expired {
		return false
	}
	return q.Disabled == nil || g.Disabled == *q.Disabled
}

// event logs one change with who asked.
func (a *API) event(r *http.Request, msg, name string, fields ...zap.Field) {
	fields = append(fields, zap.String("remote", r.RemoteAddr))
	if name != "" {
		fields = append(fields, zap.String("name", name))
	}
	a.Log.Info(msg, fields...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
