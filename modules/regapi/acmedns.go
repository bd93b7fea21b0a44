package regapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// The acme-dns-compatible surface (github.com/joohoi/acme-dns): POST
// /update, GET /health and, when the operator turns it on, POST /register,
// so that every client that speaks acme-dns
// (lego and Traefik, acme.sh's dns_acmedns, certbot's acme-dns hook,
// Posh-ACME) can obtain a gateway's certificate with the gateway's token.
//
// The account a client stores maps onto a gateway:
//
//	username   the gateway's name (X-Api-User)
//	password   the gateway's token (X-Api-Key)
//	subdomain  the gateway's name (the "subdomain" of /update)
//	fulldomain _acme-challenge.NAME.ZONE, where the values are served
//
// acme-dns itself serves the values at fulldomain and has the owner
// CNAME _acme-challenge.DOMAIN to it; here fulldomain is the gateway's
// own challenge name, so NAME.ZONE and *.NAME.ZONE need no CNAME.

// acmeDNSTXTLength is the length acme-dns accepts for a value: the
// unpadded base64url SHA-256 digest that DNS-01 puts in the record.
const acmeDNSTXTLength = 43

// The "error" names acme-dns answers, which its clients show as they are.
const (
	acmeDNSForbidden    = "forbidden"
	acmeDNSBadTXT       = "bad_txt"
	acmeDNSBadSubdomain = "bad_subdomain"
	acmeDNSMalformed    = "malformed_json_payload"
	acmeDNSDBError      = "db_error"
	acmeDNSBadCIDR      = "invalid_allowfrom_cidr"
)

type acmeDNSUpdate struct {
	Subdomain string `json:"subdomain"`
	TXT       string `json:"txt"`
}

func (a *API) acmeDNSRoutes() {
	a.mux.HandleFunc("POST /update", a.acmeDNSUpdate)
	if a.cfg.ACMEDNSRegister {
		a.mux.HandleFunc("POST /register", a.acmeDNSRegister)
	}
	a.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		// acme-dns answers 200 with no body.
		w.WriteHeader(http.StatusOK)
	})
}

// acmeDNSUpdate checks, in acme-dns's order, the credentials (401), the
// body (400), the subdomain against the gateway (403; acme-dns answers 401
// here too, its clients only look for 200), and the value (400), then
// rolls the value into _acme-challenge.NAME.ZONE.
func (a *API) acmeDNSUpdate(w http.ResponseWriter, r *http.Request) {
	user, key := r.Header.Get("X-Api-User"), r.Header.Get("X-Api-Key")
	if user == "" || key == "" {
		writeACMEDNSError(w, http.StatusUnauthorized, acmeDNSForbidden, "X-Api-User and X-Api-Key required")
		return
	}
	g, err := a.reg.Authenticate(r.Context(), key)
	if errors.Is(err, registry.ErrNotFound) {
		writeACMEDNSError(w, http.StatusUnauthorized, acmeDNSForbidden, "unknown key")
		return
	}
	if errors.Is(err, registry.ErrDisabled) {
		// The operator's decision, not a fault of ours: refused like a
		// wrong key, and not reported as an internal error.
		writeACMEDNSError(w, http.StatusUnauthorized, acmeDNSForbidden, "this account is disabled")
		return
	}
	if err != nil {
		a.acmeDNSInternal(w, r, err)
		return
	}
	// The user names the gateway; the key alone decides, and a key shown
	// with another gateway's name is refused like a wrong key.
	if !strings.EqualFold(user, g.Name) {
		writeACMEDNSError(w, http.StatusUnauthorized, acmeDNSForbidden, "the key is not this user's")
		return
	}
	// acme-dns refuses an account's key from outside its allowfrom
	// networks like a wrong key, before it reads the body.
	if ip := a.cfg.ClientIP(r); !g.AllowsFrom(ip) {
		writeACMEDNSError(w, http.StatusUnauthorized, acmeDNSForbidden, "updates for this account are not allowed from "+ip.String())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		writeACMEDNSError(w, http.StatusBadRequest, acmeDNSMalformed, "could not read body")
		return
	}
	var upd acmeDNSUpdate
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&upd); err != nil || dec.More() {
		writeACMEDNSError(w, http.StatusBadRequest, acmeDNSMalformed, "body must be one JSON object {\"subdomain\", \"txt\"}")
		return
	}
	if upd.Subdomain == "" {
		writeACMEDNSError(w, http.StatusBadRequest, acmeDNSBadSubdomain, "subdomain required")
		return
	}
	if !strings.EqualFold(upd.Subdomain, g.Name) {
		writeACMEDNSError(w, http.StatusForbidden, acmeDNSForbidden, "this key may only update subdomain "+g.Name)
		return
	}
	if !validACMEDNSTXT(upd.TXT) {
		writeACMEDNSError(w, http.StatusBadRequest, acmeDNSBadTXT, "txt must be 43 characters of unpadded base64url")
		return
	}
	if err := a.reg.RollChallenge(r.Context(), registry.GatewaySubtree(g.Name), upd.TXT); err != nil {
		for _, e := range errorTable {
			if errors.Is(err, e.err) && e.status < 500 {
				// The gateway's own records leave no room (its limit).
				writeACMEDNSError(w, e.status, e.name, err.Error())
				return
			}
		}
		a.acmeDNSInternal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"txt": upd.TXT})
}

// acmeDNSRegistration is /register's answer, acme-dns's fields.
type acmeDNSRegistration struct {
	Username   string   `json:"username"`
	Password   string   `json:"password"`
	Fulldomain string   `json:"fulldomain"`
	Subdomain  string   `json:"subdomain"`
	Allowfrom  []string `json:"allowfrom"`
}

// acmeDNSRegister creates a gateway with a random name, as acme-dns
// creates an account: an empty body, or {"allowfrom": [CIDR, ...]}. It
// answers 201 with the account; 400 malformed_json_payload for a body
// that is not JSON, 400 invalid_allowfrom_cidr for a network that is not
// CIDR, as acme-dns does; 429 past the rate limit of /subscribe.
func (a *API) acmeDNSRegister(w http.ResponseWriter, r *http.Request) {
	if a.limited(w, r, a.cfg.SubscribeLimit) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		writeACMEDNSError(w, http.StatusBadRequest, acmeDNSMalformed, "could not read body")
		return
	}
	var req struct {
		AllowFrom []string `json:"allowfrom"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&req); err != nil || dec.More() {
			writeACMEDNSError(w, http.StatusBadRequest, acmeDNSMalformed, "body must be empty or one JSON object {\"allowfrom\": [...]}")
			return
		}
	}
	allow, err := registry.ParseAllowFrom(req.AllowFrom)
	if err != nil {
		writeACMEDNSError(w, http.StatusBadRequest, acmeDNSBadCIDR, err.Error())
		return
	}
	sub, err := a.reg.RegisterACMEDNS(r.Context(), allow)
	if err != nil {
		a.acmeDNSInternal(w, r, err)
		return
	}
	entries := make([]string, len(allow))
	for i, p := range allow {
		entries[i] = p.String()
	}
	writeJSON(w, http.StatusCreated, acmeDNSRegistration{
		Username:   sub.Name,
		Password:   sub.Token,
		Fulldomain: "_acme-challenge." + a.fqdn(sub.Name),
		Subdomain:  sub.Name,
		Allowfrom:  entries,
	})
}

func (a *API) acmeDNSInternal(w http.ResponseWriter, r *http.Request, err error) {
	if a.cfg.OnError != nil {
		a.cfg.OnError(r, err)
	}
	writeACMEDNSError(w, http.StatusInternalServerError, acmeDNSDBError, "internal error")
}

// writeACMEDNSError answers acme-dns's shape, {"error": NAME}, with our
// reason beside it.
func writeACMEDNSError(w http.ResponseWriter, status int, name, reason string) {
	writeJSON(w, status, apierror.Body{Error: name, Reason: reason})
}

// validACMEDNSTXT is acme-dns's rule: exactly 43 characters, all of the
// unpadded base64url alphabet.
func validACMEDNSTXT(s string) bool {
	if len(s) != acmeDNSTXTLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
