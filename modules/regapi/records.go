package regapi

import (
	"fmt"
	"net/http"
	"strings"
	"time"

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

func (a *API) v1Zones(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	// The gateway can manage records both through the Gatehouse zone and
	// through its own name taken as a zone.
	writeJSON(w, http.StatusOK, map[string]any{"zones": []map[string]string{{"name": a.cfg.Zone + "."}, {"name": a.fqdn(g.Name) + "."}}})
}

// zoneOf checks that zone is the Gatehouse zone or inside g's subtree and
// returns it normalised (lower case, no trailing dot).
func (a *API) zoneOf(g *registry.Gateway, zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	if z == "" {
		return a.cfg.Zone, nil
	}
	own := a.fqdn(g.Name)
	if z == a.cfg.Zone || z == own || strings.HasSuffix(z, "."+own) {
		return z, nil
	}
	return "", fmt.Errorf("%w: zone %q is neither %s nor inside %s", registry.ErrOutsideSubtree, zone, a.cfg.Zone, own)
}

// owner turns a zone-relative name into a name relative to the gateway.
func (a *API) owner(g *registry.Gateway, zone, name string) (string, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	fqdn := zone
	if name != "@" && name != "" {
		fqdn = name + "." + zone
	}
	if err := checkLabels(fqdn); err != nil {
		return "", err
	}
	own := a.fqdn(g.Name)
	switch {
	case fqdn == own:
		return "", nil
	case strings.HasSuffix(fqdn, "."+own):
		return strings.TrimSuffix(fqdn, "."+own), nil
	}
	return "", fmt.Errorf("%w: %s is outside %s", registry.ErrOutsideSubtree, fqdn, own)
}

// checkLabels refuses a name with an empty label ("a..b", ".a"), which
// trimming would otherwise turn into another name.
func checkLabels(fqdn string) error {
	if strings.HasPrefix(fqdn, ".") || strings.Contains(fqdn, "..") {
		return fmt.Errorf("%w: empty label in %q", registry.ErrInvalidInput, fqdn)
	}
	return nil
}

// relative turns a gateway-relative owner back into a zone-relative name.
func (a *API) relative(g *registry.Gateway, zone, owner string) string {
	fqdn := a.fqdn(g.Name)
	if owner != "" {
		fqdn = owner + "." + fqdn
	}
	if fqdn == zone {
		return "@"
	}
	return strings.TrimSuffix(fqdn, "."+zone)
}

func (a *API) toBodies(g *registry.Gateway, zone string, recs []registry.Record) []recordBody {
	out := make([]recordBody, 0, len(recs))
	for _, rec := range recs {
		if zone != a.cfg.Zone {
			// Records above a narrower zone are not in it.
			if _, err := a.owner(g, zone, "@"); err == nil && !a.inZone(g, zone, rec.Owner) {
				continue
			}
		}
		out = append(out, recordBody{Name: a.relative(g, zone, rec.Owner), Type: rec.Type, Data: rec.Value, TTL: int(rec.TTL / time.Second)})
	}
	return out
}

func (a *API) inZone(g *registry.Gateway, zone, owner string) bool {
	fqdn := a.fqdn(g.Name)
	if owner != "" {
		fqdn = owner + "." + fqdn
	}
	return fqdn == zone || strings.HasSuffix(fqdn, "."+zone)
}

func (a *API) v1GetRecords(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	zone, err := a.zoneOf(g, r.URL.Query().Get("zone"))
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	recs, err := a.reg.Records(r.Context(), g)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.toBodies(g, zone, recs)})
}

// readRecords decodes and resolves a gateway's records request; strict
// says whether type and data are required (append, set) or act as
// wildcards (delete).
func (a *API) readRecords(w http.ResponseWriter, r *http.Request, g *registry.Gateway, strict bool) (string, []registry.Record, bool) {
	return a.decodeRecords(w, r, strict,
		func(zone string) (string, error) { return a.zoneOf(g, zone) },
		func(zone, name string) (string, error) { return a.owner(g, zone, name) })
}

// decodeRecords reads a records request body, resolves its zone with zoneOf
// and each record's name with ownerOf, and answers 400 or 403 itself.
func (a *API) decodeRecords(w http.ResponseWriter, r *http.Request, strict bool,
	zoneOf func(zone string) (string, error), ownerOf func(zone, name string) (string, error)) (string, []registry.Record, bool) {
	var req recordsRequest
	if !a.decodeBody(w, r, &req) {
		return "", nil, false
	}
	zone, err := zoneOf(req.Zone)
	if err != nil {
		writeRegistryError(w, err)
		return "", nil, false
	}
	if len(req.Records) == 0 {
		writeError(w, http.StatusBadRequest, "BadRequest", "no records given")
		return "", nil, false
	}
	recs := make([]registry.Record, 0, len(req.Records))
	for i, b := range req.Records {
		if b.TTL < 0 {
			writeError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("record %d: negative ttl", i))
			return "", nil, false
		}
		if strict && (b.Type == "" || b.Data == "") {
			writeError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("record %d: type and data required", i))
			return "", nil, false
		}
		owner, err := ownerOf(zone, b.Name)
		if err != nil {
			writeRegistryError(w, err)
			return "", nil, false
		}
		recs = append(recs, registry.Record{Owner: owner, Type: strings.ToUpper(b.Type), Value: b.Data, TTL: time.Duration(b.TTL) * time.Second})
	}
	return zone, recs, true
}

func (a *API) v1AppendRecords(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	zone, recs, ok := a.readRecords(w, r, g, true)
	if !ok {
		return
	}
	added, err := a.reg.AppendRecords(r.Context(), g, recs)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.toBodies(g, zone, added)})
}

func (a *API) v1SetRecords(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	zone, recs, ok := a.readRecords(w, r, g, true)
	if !ok {
		return
	}
	set, err := a.reg.SetRecords(r.Context(), g, recs)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.toBodies(g, zone, set)})
}

func (a *API) v1DeleteRecords(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	zone, recs, ok := a.readRecords(w, r, g, false)
	if !ok {
		return
	}
	filters := make([]registry.RecordFilter, 0, len(recs))
	for _, rec := range recs {
		owner := rec.Owner
		filters = append(filters, registry.RecordFilter{Owner: &owner, Type: rec.Type, Value: rec.Value, TTL: rec.TTL})
	}
	deleted, err := a.reg.DeleteRecords(r.Context(), g, filters)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recordsResponse{Records: a.toBodies(g, zone, deleted)})
}
