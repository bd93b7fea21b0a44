package regapi

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// recordBody is one record as the /v1/records API speaks it: libdns's
// shape, with the name relative to the request's zone.
type recordBody struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Data string `json:"data"`
	TTL  int    `json:"ttl,omitempty"`
}

type recordsRequest struct {
	Zone    string       `json:"zone"`
	Records []recordBody `json:"records"`
}

type recordsResponse struct {
	Records []recordBody `json:"records"`
}

// scope is the subtree a records request acts on and how the request's
// zones and names map onto it: a gateway's, for its own token, or the
// zone's own, for the operator token. Every records handler serves both
// through it; what may be written in the subtree is the registry's rule.
type scope struct {
	subtree registry.Subtree
	// root is the subtree's root name: NAME.ZONE, or ZONE.
	root string
	// zones is what /v1/zones lists.
	zones []string
	// below accepts a request zone below root; ZONE and root always are.
	below func(zone string) bool
}

func (a *API) gatewayScope(g *registry.Gateway) scope {
	// The gateway can manage records both through the Gatehouse zone and
	// through its own name, or any name below it, taken as a zone.
	root := a.fqdn(g.Name)
	return scope{
		subtree: registry.GatewaySubtree(g.Name),
		root:    root,
		zones:   []string{a.cfg.Zone, root},
		below:   func(z string) bool { return strings.HasSuffix(z, "."+root) },
	}
}

func (a *API) zoneScope() scope {
	// The operator manages the zone's ACME challenge, through the zone or
	// the challenge name taken as a zone.
	challenge := registry.ZoneChallenge + "." + a.cfg.Zone
	return scope{
		subtree: registry.ZoneSubtree(),
		root:    a.cfg.Zone,
		zones:   []string{a.cfg.Zone},
		below:   func(z string) bool { return z == challenge },
	}
}

// scoped serves a request that bears the operator token in the zone's
// scope, and any other in the scope of the gateway its token belongs to.
func (a *API) scoped(h func(w http.ResponseWriter, r *http.Request, sc scope)) http.HandlerFunc {
	asGateway := a.authed(func(w http.ResponseWriter, r *http.Request, g *registry.Gateway) { h(w, r, a.gatewayScope(g)) })
	return func(w http.ResponseWriter, r *http.Request) {
		if token := bearer(r); token != "" && a.cfg.Operator != nil && a.cfg.Operator(token) {
			h(w, r, a.zoneScope())
			return
		}
		asGateway(w, r)
	}
}

func (a *API) v1Zones(w http.ResponseWriter, _ *http.Request, sc scope) {
	zones := make([]map[string]string, len(sc.zones))
	for i, z := range sc.zones {
		zones[i] = map[string]string{"name": z + "."}
	}
	writeJSON(w, http.StatusOK, map[string]any{"zones": zones})
}

// zoneOf checks that zone is the Gatehouse zone, the scope's root or a
// zone below it the scope accepts, and returns it normalised (lower case,
// no trailing dot).
func (a *API) zoneOf(sc scope, zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	if z == "" {
		return a.cfg.Zone, nil
	}
	if z == a.cfg.Zone || z == sc.root || sc.below(z) {
		return z, nil
	}
	if sc.subtree.IsZone() {
		return "", fmt.Errorf("%w: the operator manages %s.%s only, not zone %q", registry.ErrOutsideSubtree, registry.ZoneChallenge, a.cfg.Zone, zone)
	}
	return "", fmt.Errorf("%w: zone %q is neither %s nor inside %s", registry.ErrOutsideSubtree, zone, a.cfg.Zone, sc.root)
}

// owner turns a zone-relative name into a name relative to the scope's
// root.
func (a *API) owner(sc scope, zone, name string) (string, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	fqdn := zone
	if name != "@" && name != "" {
		fqdn = name + "." + zone
	}
	if err := checkLabels(fqdn); err != nil {
		return "", err
	}
	switch {
	case fqdn == sc.root:
		return "", nil
	case strings.HasSuffix(fqdn, "."+sc.root):
		return strings.TrimSuffix(fqdn, "."+sc.root), nil
	}
	return "", fmt.Errorf("%w: %s is outside %s", registry.ErrOutsideSubtree, fqdn, sc.root)
}

// checkLabels refuses a name with an empty label ("a..b", ".a"), which
// trimming would otherwise turn into another name.
func checkLabels(fqdn string) error {
	if strings.HasPrefix(fqdn, ".") || strings.Contains(fqdn, "..") {
		return fmt.Errorf("%w: empty label in %q", registry.ErrInvalidInput, fqdn)
	}
	return nil
}

// toBodies turns records back into names relative to zone, leaving out
// those above a narrower zone, which are not in it.
func (a *API) toBodies(sc scope, zone string, recs []registry.Record) []recordBody {
	out := make([]recordBody, 0, len(recs))
	for _, rec := range recs {
		fqdn := sc.root
		if rec.Owner != "" {
			fqdn = rec.Owner + "." + fqdn
		}
		name := "@"
		if fqdn != zone {
			rel, ok := strings.CutSuffix(fqdn, "."+zone)
			if !ok {
				continue
			}
			name = rel
		}
		out = append(out, recordBody{Name: name, Type: rec.Type, Data: rec.Value, TTL: int(rec.TTL / time.Second)})
	}
	return out
}

func (a *API) v1GetRecords(w http.ResponseWriter, r *http.Request, sc scope) {
	zone, err := a.zoneOf(sc, r.URL.Query().Get("zone"))
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	recs, err := a.reg.Records(r.Context(), sc.subtree)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.toBodies(sc, zone, recs)})
}

// readRecords decodes a records request body, resolves its zone and each
// record's name in the scope, and answers 400 or 403 itself; strict says
// whether type and data are required (append, set) or act as wildcards
// (delete).
func (a *API) readRecords(w http.ResponseWriter, r *http.Request, sc scope, strict bool) (string, []registry.Record, bool) {
	var req recordsRequest
	if !a.decodeBody(w, r, &req) {
		return "", nil, false
	}
	zone, err := a.zoneOf(sc, req.Zone)
	if err != nil {
		writeRegistryError(w, err)
		return "", nil, false
	}
	if len(req.Records) == 0 {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "no records given")
		return "", nil, false
	}
	recs := make([]registry.Record, 0, len(req.Records))
	for i, b := range req.Records {
		if b.TTL < 0 {
			writeError(w, http.StatusBadRequest, apierror.BadRequest, fmt.Sprintf("record %d: negative ttl", i))
			return "", nil, false
		}
		if strict && (b.Type == "" || b.Data == "") {
			writeError(w, http.StatusBadRequest, apierror.BadRequest, fmt.Sprintf("record %d: type and data required", i))
			return "", nil, false
		}
		owner, err := a.owner(sc, zone, b.Name)
		if err != nil {
			writeRegistryError(w, err)
			return "", nil, false
		}
		recs = append(recs, registry.Record{Owner: owner, Type: strings.ToUpper(b.Type), Value: b.Data, TTL: time.Duration(b.TTL) * time.Second})
	}
	return zone, recs, true
}

func (a *API) v1AppendRecords(w http.ResponseWriter, r *http.Request, sc scope) {
	zone, recs, ok := a.readRecords(w, r, sc, true)
	if !ok {
		return
	}
	added, err := a.reg.AppendRecords(r.Context(), sc.subtree, recs)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.toBodies(sc, zone, added)})
}

func (a *API) v1SetRecords(w http.ResponseWriter, r *http.Request, sc scope) {
	zone, recs, ok := a.readRecords(w, r, sc, true)
	if !ok {
		return
	}
	set, err := a.reg.SetRecords(r.Context(), sc.subtree, recs)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.toBodies(sc, zone, set)})
}

func (a *API) v1DeleteRecords(w http.ResponseWriter, r *http.Request, sc scope) {
	zone, recs, ok := a.readRecords(w, r, sc, false)
	if !ok {
		return
	}
	filters := make([]registry.RecordFilter, 0, len(recs))
	for _, rec := range recs {
		owner := rec.Owner
		filters = append(filters, registry.RecordFilter{Owner: &owner, Type: rec.Type, Value: rec.Value, TTL: rec.TTL})
	}
	deleted, err := a.reg.DeleteRecords(r.Context(), sc.subtree, filters)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.toBodies(sc, zone, deleted)})
}
