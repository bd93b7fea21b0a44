package regapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Custom domains: a gateway claims a name outside the zone once its owner
// pointed it, and its _acme-challenge name, at the gateway's by CNAME.

type domainJSON struct {
	Domain    string `json:"domain"`
	Gateway   string `json:"gateway"`
	CheckedAt string `json:"checked_at"`
}

// claimJSON is a claim as the API answers it (the contract the agent reads).
func claimJSON(c registry.DomainClaim) domainJSON {
	return domainJSON{Domain: c.Domain, Gateway: c.Gateway, CheckedAt: c.Checked.UTC().Format(time.RFC3339)}
}

func (a *API) domainRoutes() {
	m := a.mux
	m.HandleFunc("POST /v1/domains", a.withDomains(a.authed(a.v1ClaimDomain)))
	m.HandleFunc("GET /v1/domains", a.withDomains(a.authed(a.v1ListDomains)))
	m.HandleFunc("DELETE /v1/domains/{domain}", a.withDomains(a.authed(a.v1ReleaseDomain)))
}

// withDomains answers 404 on a server without custom domains.
func (a *API) withDomains(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Domains == nil {
			writeError(w, http.StatusNotFound, apierror.NotFound, "custom domains are not enabled on this server")
			return
		}
		h(w, r)
	}
}

// v1ClaimDomain claims {"domain"} for the token's gateway: 200 with the
// claim when both CNAMEs check out now; 400 InvalidDomain, 400
// TooManyDomains (registry.MaxDomainsPerGateway), 409
// DomainTaken, 422 DomainNotDelegated (the reason names the record); 429
// past the rate limit of /subscribe, since a claim creates a routed name
// and makes the cloud query the public DNS.
func (a *API) v1ClaimDomain(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	if a.limited(w, r, a.cfg.SubscribeLimit) {
		return
	}
	var b struct {
		Domain string `json:"domain"`
	}
	if !a.decodeBody(w, r, &b) {
		return
	}
	c, err := a.cfg.Domains.Claim(r.Context(), g, b.Domain)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, claimJSON(c))
}

func (a *API) v1ListDomains(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	claims, err := a.cfg.Domains.List(r.Context(), g)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	out := make([]domainJSON, 0, len(claims))
	for _, c := range claims {
		out = append(out, claimJSON(c))
	}
	writeJSON(w, http.StatusOK, map[string]any{"domains": out})
}

func (a *API) v1ReleaseDomain(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	err := a.cfg.Domains.Release(r.Context(), g, r.PathValue("domain"))
	if errors.Is(err, registry.ErrNotFound) {
		writeError(w, http.StatusNotFound, apierror.NoSuchDomain, "this gateway holds no domain "+r.PathValue("domain"))
		return
	}
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
