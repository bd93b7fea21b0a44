package regapi

import (
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// The compatible surface: GET with query parameters, as the original
// registration server answered them.

func (a *API) compatSubscribe(w http.ResponseWriter, r *http.Request, q *query) {
	if a.limited(w, r, a.cfg.SubscribeLimit) {
		return
	}
	sub, err := a.reg.Subscribe(r.Context(), registry.SubscribeRequest{
		Name:             compatName(q.get("name")),
		Email:            q.get("email"),
		ReclamationToken: q.get("reclamationToken"),
		Description:      q.get("desc"),
		Mode:             registry.Mode(q.get("mode")),
		EmailWithoutMail: true,
	})
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": sub.Name, "token": sub.Token})
}

// compatName is the name as the original server took it: trimmed and
// lowercased, which the gateway's setup page relies on (it sends what the
// user typed).
func compatName(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func (a *API) compatUnsubscribe(w http.ResponseWriter, r *http.Request, q *query) {
	if err := a.reg.Unsubscribe(r.Context(), q.get("token"), q.get("reclamationToken")); err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (a *API) compatReclaim(w http.ResponseWriter, r *http.Request, q *query) {
	if a.limited(w, r, a.cfg.ReclaimLimit) {
		return
	}
	err := a.reg.ReclaimUUID(r.Context(), compatName(q.get("name")))
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, struct{}{})
	case isNotFound(err) || isInvalidName(err):
		writeError(w, http.StatusBadRequest, apierror.NoSuchName, "no gateway has this name")
	default:
		writeRegistryError(w, err)
	}
}

func (a *API) compatPing(w http.ResponseWriter, r *http.Request, q *query) {
	var raw []string
	for _, v := range q.all("local_ip") {
		raw = append(raw, strings.Split(v, ",")...)
	}
	local, err := parseAddrs(raw)
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	token := q.get("token")
	if token == "" {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "token required")
		return
	}
	if _, err := a.reg.Ping(r.Context(), token, a.cfg.ClientIP(r), local); err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (a *API) compatDNSConfig(w http.ResponseWriter, r *http.Request, q *query) {
	if q.get("token") == "" {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "token required")
		return
	}
	if err := a.reg.AddChallenge(r.Context(), q.get("token"), q.get("challenge")); err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (a *API) compatInfo(w http.ResponseWriter, r *http.Request, q *query) {
	if q.get("token") == "" {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "token required")
		return
	}
	g, err := a.reg.Authenticate(r.Context(), q.get("token"))
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.info(g))
}

func (a *API) compatSetEmail(w http.ResponseWriter, r *http.Request, q *query) {
	if a.limited(w, r, a.cfg.EmailLimit) {
		return
	}
	if q.get("token") == "" || q.get("email") == "" {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "token and email required")
		return
	}
	optOut, err := parseBool(q.get("optout"))
	if err != nil {
		writeRegistryError(w, err)
		return
	}
	if err := a.reg.SetEmail(r.Context(), q.get("token"), q.get("email"), optOut); err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

var verifyPage = template.Must(template.New("verify").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

func (a *API) compatVerifyEmail(w http.ResponseWriter, r *http.Request, q *query) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	g, err := a.reg.VerifyEmail(r.Context(), q.get("s"))
	if err != nil {
		status, text := http.StatusBadRequest, "This verification link is not valid. It may have been used already, or replaced by a newer one."
		if isExpired(err) {
			text = "This verification link has expired. Ask your gateway to send a new one."
		} else if !isNotFound(err) {
			status, text = http.StatusInternalServerError, "The email could not be verified because of a server error. Please try again later."
		}
		w.WriteHeader(status)
		_ = verifyPage.Execute(w, map[string]string{"Title": "Email not verified", "Text": text})
		return
	}
	_ = verifyPage.Execute(w, map[string]string{
		"Title": "Email verified",
		"Text":  fmt.Sprintf("%s is verified for %s. You can now reclaim this name on a new gateway.", g.Email, a.fqdn(g.Name)),
	})
}

func (a *API) compatRevokeEmail(w http.ResponseWriter, r *http.Request, q *query) {
	if q.get("token") == "" {
		writeError(w, http.StatusBadRequest, apierror.BadRequest, "token required")
		return
	}
	if err := a.reg.RevokeEmail(r.Context(), q.get("token")); err != nil {
		writeRegistryError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// infoBody is a gateway as the API shows it: never a token or its hash.
type infoBody struct {
	Name          string   `json:"name"`
	FQDN          string   `json:"fqdn"`
	Mode          string   `json:"mode"`
	Description   string   `json:"description"`
	Email         string   `json:"email,omitempty"`
	EmailVerified bool     `json:"email_verified"`
	OptOut        bool     `json:"optout"`
	LastPing      string   `json:"last_ping,omitempty"`
	PublicIPv4    string   `json:"public_ipv4,omitempty"`
	PublicIPv6    string   `json:"public_ipv6,omitempty"`
	LocalAddrs    []string `json:"local_addrs"`
	Expired       bool     `json:"expired"`
	Created       string   `json:"created"`
}

func (a *API) info(g *registry.Gateway) infoBody {
	b := infoBody{
		Name: g.Name, FQDN: a.fqdn(g.Name), Mode: string(g.Mode), Description: g.Description,
		Email: g.Email, EmailVerified: g.EmailVerified, OptOut: g.OptOut,
		Expired: g.Expired, Created: g.Created.UTC().Format(time.RFC3339),
		LocalAddrs: addrStrings(g.LocalAddrs),
	}
	if !g.LastPing.IsZero() {
		b.LastPing = g.LastPing.UTC().Format(time.RFC3339Nano)
	}
	if g.PublicV4.IsValid() {
		b.PublicIPv4 = g.PublicV4.String()
	}
	if g.PublicV6.IsValid() {
		b.PublicIPv6 = g.PublicV6.String()
	}
	return b
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func parseAddrs(raw []string) ([]netip.Addr, error) {
	if raw == nil {
		return nil, nil
	}
	if len(raw) > registry.MaxLocalAddrs {
		return nil, fmt.Errorf("%w: at most %d local addresses", registry.ErrInvalidInput, registry.MaxLocalAddrs)
	}
	out := make([]netip.Addr, 0, len(raw))
	for _, s := range raw {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("%w: %q is not an IP address", registry.ErrInvalidInput, s)
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}

func parseBool(s string) (bool, error) {
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%w: %q is not a boolean", registry.ErrInvalidInput, s)
	}
	return b, nil
}
