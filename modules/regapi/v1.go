package regapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// decodeBody reads a JSON body strictly: bounded, UTF-8, one value.
func (a *API) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, apierror.BodyTooLarge, fmt.Sprintf("body larger than %d bytes", a.cfg.MaxBodyBytes))
		} else {
			writeError(w, http.StatusBadRequest, apierror.BadRequest, "could not read body")
		}
		return false
	}
	// encoding/json would silently replace invalid UTF-8; refuse it instead.
	if !utf8.Valid(body) {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "body is not UTF-8")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "malformed JSON: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "trailing data after JSON body")
		return false
	}
	return true
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authed resolves the bearer token to its gateway before h runs.
func (a *API) authed(h func(w http.ResponseWriter, r *http.Request, g *registry.Gateway)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := bearer(r)
		if token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse"`)
			writeError(w, http.StatusUnauthorized, apierror.Unauthorized, "Authorization: Bearer TOKEN required")
			return
		}
		g, err := a.reg.Authenticate(r.Context(), token)
		if errors.Is(err, registry.ErrNotFound) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, apierror.Unauthorized, "unknown token")
			return
		}
		if err != nil {
			writeRegistryError(w, err)
			return
		}
		if a.refusedFrom(w, r, g) {
			return
		}
		h(w, r, g)
	}
}

// allowedFrom refuses a compatible endpoint's gateway token (the query's
// "token") from outside the gateway's allowfrom networks, before h runs.
// A token that does not authenticate goes on to h, which answers it as it
// always did.
func (a *API) allowedFrom(h func(w http.ResponseWriter, r *http.Request, q *query)) func(w http.ResponseWriter, r *http.Request, q *query) {
	return func(w http.ResponseWriter, r *http.Request, q *query) {
		if token := q.get("token"); token != "" {
			if g, err := a.reg.Authenticate(r.Context(), token); err == nil && a.refusedFrom(w, r, g) {
				return
			}
		}
		h(w, r, q)
	}
}

// refusedFrom answers 401 when g's token may not be used from the client's
// address. A gateway created by acme-dns's /register with allowfrom is an
// acme-dns account whose clients expect its key to be useless elsewhere;
// since its key is the gateway's token, every endpoint that takes the
// token honours allowfrom, or the key would set the challenge TXT through
// /dnsconfig or /v1/records from anywhere.
func (a *API) refusedFrom(w http.ResponseWriter, r *http.Request, g *registry.Gateway) bool {
	ip := a.cfg.ClientIP(r)
	if g.AllowsFrom(ip) {
		return false
	}
	writeError(w, http.StatusUnauthorized, apierror.Unauthorized, "this gateway's token is not accepted from "+ip.String()+" (its allowfrom)")
	return true
}

type subscribeBody struct {
	Name             string `json:"name"`
	MAC              string `json:"mac"`
	Email            string `json:"email"`
	Description      string `json:"description"`
	Mode             string `json:"mode"`
	ReclamationToken string `json:"reclamation_token"`
}

func (a *API) v1Subscribe(w http.ResponseWriter, r *http.Request) {
	if a.limited(w, r, a.cfg.SubscribeLimit) {
		return
	}
	var b subscribeBody
	if !a.decodeBody(w, r, &b) {
		return
	}
	name := b.Name
	switch {
	case b.Name != "" && b.MAC != "":
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "give name or mac, not both")
		return
	case b.MAC != "":
		n, err := registry.NameFromMAC(b.MAC)
		if err != nil {
			writeRegistryError(w, err)
			return
		}
		name = n
	}
	sub, err := a.reg.Subscribe(r.Context(), registry.SubscribeRequest{
		Name: name, Email: b.Email, ReclamationToken: b.ReclamationToken,
		Description: b.Description, Mode: registry.Mode(b.Mode),
	})
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	status := http.StatusCreated
	if sub.Reclaimed {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]string{"name": sub.Name, "token": sub.Token, "zone": a.cfg.Zone, "fqdn": a.fqdn(sub.Name)})
}

type pingBody struct {
	LocalAddrs []string `json:"local_addrs"`
}

func (a *API) v1Ping(w http.ResponseWriter, r *http.Request, _ *registry.Gateway) {
	var b pingBody
	if r.ContentLength != 0 && !a.decodeBody(w, r, &b) {
		return
	}
	local, err := parseAddrs(b.LocalAddrs)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	if local == nil && b.LocalAddrs != nil {
		local = []netip.Addr{}
	}
	g, err := a.reg.Ping(r.Context(), bearer(r), a.cfg.ClientIP(r), local)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.info(g))
}

func (a *API) v1Info(w http.ResponseWriter, r *http.Request, g *registry.Gateway) {
	writeJSON(w, http.StatusOK, a.info(g))
}

type emailBody struct {
	Email  string `json:"email"`
	OptOut bool   `json:"optout"`
}

func (a *API) v1Email(w http.ResponseWriter, r *http.Request) {
	if a.limited(w, r, a.cfg.EmailLimit) {
		return
	}
	var b emailBody
	if !a.decodeBody(w, r, &b) {
		return
	}
	token := bearer(r)
	if token == "" {
		writeError(w, http.StatusUnauthorized, apierror.Unauthorized, "Authorization: Bearer TOKEN required")
		return
	}
	if err := a.reg.SetEmail(r.Context(), token, b.Email, b.OptOut); err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (a *API) v1Reclaim(w http.ResponseWriter, r *http.Request) {
	if a.limited(w, r, a.cfg.ReclaimLimit) {
		return
	}
	var b struct {
		Name string `json:"name"`
	}
	if !a.decodeBody(w, r, &b) {
		return
	}
	err := a.reg.Reclaim(r.Context(), b.Name)
	if isNotFound(err) {
		writeError(w, http.StatusNotFound, apierror.NoSuchName, "no gateway has this name")
		return
	}
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (a *API) v1Unsubscribe(w http.ResponseWriter, r *http.Request) {
	token := bearer(r)
	if token == "" {
		writeError(w, http.StatusUnauthorized, apierror.Unauthorized, "Authorization: Bearer TOKEN required")
		return
	}
	if err := a.reg.Unsubscribe(r.Context(), token, ""); err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

type discovered struct {
	Name        string   `json:"name"`
	FQDN        string   `json:"fqdn"`
	Description string   `json:"description"`
	LocalAddrs  []string `json:"local_addrs"`
}

// v1Discover lists the gateways behind the caller's public address, so a
// web app can offer "connect to your gateway" without a name being typed.
func (a *API) v1Discover(w http.ResponseWriter, r *http.Request) {
	ip := a.cfg.ClientIP(r)
	if !ip.IsValid() {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "client address unknown")
		return
	}
	gws, err := a.reg.Discover(r.Context(), ip)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	out := make([]discovered, 0, len(gws))
	for _, g := range gws {
		out = append(out, discovered{Name: g.Name, FQDN: a.fqdn(g.Name), Description: g.Description, LocalAddrs: addrStrings(g.LocalAddrs)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"gateways": out})
}
