package regapi

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// The operator's records API: the same /v1/zones and /v1/records, with
// the same libdns semantics, over the zone's own ACME challenge only. The
// cloud obtains its wildcard certificate (*.ZONE) with the libdns
// provider and the operator token exactly as a gateway obtains its own;
// the registry refuses every other name and type (403 OutsideSubtree).

// operatorOr serves a request that bears the operator token with op, and
// any other with gw, as the gateway the token belongs to.
func (a *API) operatorOr(op http.HandlerFunc, gw func(w http.ResponseWriter, r *http.Request, g *registry.Gateway)) http.HandlerFunc {
	asGateway := a.authed(gw)
	return func(w http.ResponseWriter, r *http.Request) {
		if token := bearer(r); token != "" && a.cfg.Operator != nil && a.cfg.Operator(token) {
			op(w, r)
			return
		}
		asGateway(w, r)
	}
}

func (a *API) opZones(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"zones": []map[string]string{{"name": a.cfg.Zone + "."}}})
}

// opZoneOf checks that zone is the Gatehouse zone or its challenge name
// and returns it normalised (lower case, no trailing dot).
func (a *API) opZoneOf(zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	switch z {
	case "":
		return a.cfg.Zone, nil
	case a.cfg.Zone, registry.ZoneChallenge + "." + a.cfg.Zone:
		return z, nil
	}
	return "", fmt.Errorf("%w: the operator manages %s.%s only, not zone %q", registry.ErrOutsideSubtree, registry.ZoneChallenge, a.cfg.Zone, zone)
}

// opOwner turns a zone-relative name into a name relative to the
// Gatehouse zone.
func (a *API) opOwner(zone, name string) (string, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	fqdn := zone
	if name != "@" && name != "" {
		fqdn = name + "." + zone
	}
	if err := checkLabels(fqdn); err != nil {
		return "", err
	}
	if owner, ok := strings.CutSuffix(fqdn, "."+a.cfg.Zone); ok {
		return owner, nil
	}
	return "", fmt.Errorf("%w: the operator manages %s.%s only, not %s", registry.ErrOutsideSubtree, registry.ZoneChallenge, a.cfg.Zone, fqdn)
}

func (a *API) opBodies(zone string, recs []registry.Record) []recordBody {
	out := make([]recordBody, 0, len(recs))
	for _, rec := range recs {
		fqdn := rec.Owner + "." + a.cfg.Zone
		name := "@"
		if fqdn != zone {
			rel, ok := strings.CutSuffix(fqdn, "."+zone)
			if !ok {
				continue // above the narrower zone asked for
			}
			name = rel
		}
		out = append(out, recordBody{Name: name, Type: rec.Type, Data: rec.Value, TTL: int(rec.TTL / time.Second)})
	}
	return out
}

func (a *API) opGetRecords(w http.ResponseWriter, r *http.Request) {
	zone, err := a.opZoneOf(r.URL.Query().Get("zone"))
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	recs, err := a.reg.ZoneRecords(r.Context())
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.opBodies(zone, recs)})
}

// opReadRecords decodes and resolves an operator's records request, as
// readRecords does a gateway's.
func (a *API) opReadRecords(w http.ResponseWriter, r *http.Request, strict bool) (string, []registry.Record, bool) {
	return a.decodeRecords(w, r, strict, a.opZoneOf, a.opOwner)
}

func (a *API) opAppendRecords(w http.ResponseWriter, r *http.Request) {
	zone, recs, ok := a.opReadRecords(w, r, true)
	if !ok {
		return
	}
	added, err := a.reg.AppendZoneRecords(r.Context(), recs)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.opBodies(zone, added)})
}

func (a *API) opSetRecords(w http.ResponseWriter, r *http.Request) {
	zone, recs, ok := a.opReadRecords(w, r, true)
	if !ok {
		return
	}
	set, err := a.reg.SetZoneRecords(r.Context(), recs)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.opBodies(zone, set)})
}

func (a *API) opDeleteRecords(w http.ResponseWriter, r *http.Request) {
	zone, recs, ok := a.opReadRecords(w, r, false)
	if !ok {
		return
	}
	filters := make([]registry.RecordFilter, 0, len(recs))
	for _, rec := range recs {
		owner := rec.Owner
		filters = append(filters, registry.RecordFilter{Owner: &owner, Type: rec.Type, Value: rec.Value, TTL: rec.TTL})
	}
	deleted, err := a.reg.DeleteZoneRecords(r.Context(), filters)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.opBodies(zone, deleted)})
}
