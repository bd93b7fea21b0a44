// Package setupui is the agent's setup page on the LAN
// (http://gateway.local:PORT): it shows the agent's status in plain words
// and lets the owner choose the gateway's name, give an email, and reclaim
// a name with the token from a reclamation mail. Once the chosen name's
// certificate is there, the page sends the browser to https://NAME.ZONE/.
// The same actions are offered as JSON under /api/ for the agent's setup
// command, and /api/status serves the status.
//
// Changing the gateway's name, reclaiming a name and setting the owner's
// email need the gateway's setup code (package setupcode), shown on the
// device only: a LAN client without it (curl, a compromised device, any
// request without an Origin header) changes nothing. Asking for a
// reclamation mail, which goes to the name's verified owner, does not.
//
// POSTs are protected against cross-site request forgery with
// net/http.CrossOriginProtection (Sec-Fetch-Site / Origin checks), and
// requests whose Host is not the gateway's (an IP address, localhost, a
// .local name or the gateway's own names) are refused, against DNS
// rebinding. The page needs no JavaScript.
//
// It does not perform the actions itself: a Controller (the agent) does.
package setupui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupcode"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
)

// Controller carries out what the owner asks for.
type Controller interface {
	// Status is the agent's current status.
	Status() status.Status
	// ChooseName subscribes name; on success the agent obtains its
	// certificate and then switches to it.
	ChooseName(ctx context.Context, name string) error
	// SetEmail gives the owner's email to the cloud, which mails a
	// verification link.
	SetEmail(ctx context.Context, email string) error
	// RequestReclaim asks the cloud to mail a reclamation token for name.
	RequestReclaim(ctx context.Context, name string) error
	// Reclaim takes name over with a mailed reclamation token.
	Reclaim(ctx context.Context, name, token string) error
}

//go:embed page.html
var files embed.FS

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.Local().Format("2006-01-02 15:04:05 MST")
	},
	"join": strings.Join,
}).ParseFS(files, "page.html"))

// Handler serves the setup page and its API.
type Handler struct {
	ctl    Controller
	code   *setupcode.Checker
	log    *slog.Logger
	next   http.Handler
	ctxTTL time.Duration
}

// New returns the setup page's handler. Changes need a setup code that
// code accepts; with a nil code every change is refused.
func New(ctl Controller, code *setupcode.Checker, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{ctl: ctl, code: code, log: log, ctxTTL: 60 * time.Second}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.index)
	mux.HandleFunc("POST /name", h.formName)
	mux.HandleFunc("POST /email", h.formEmail)
	mux.HandleFunc("POST /reclaim/request", h.formReclaimRequest)
	mux.HandleFunc("POST /reclaim", h.formReclaim)
	mux.HandleFunc("GET /api/status", h.apiStatus)
	mux.HandleFunc("POST /api/name", h.apiAction(ownerOnly, func(ctx context.Context, r apiRequest) error { return ctl.ChooseName(ctx, r.Name) }))
	mux.HandleFunc("POST /api/email", h.apiAction(ownerOnly, func(ctx context.Context, r apiRequest) error { return ctl.SetEmail(ctx, r.Email) }))
	mux.HandleFunc("POST /api/reclaim/request", h.apiAction(anyone, func(ctx context.Context, r apiRequest) error { return ctl.RequestReclaim(ctx, r.Name) }))
	mux.HandleFunc("POST /api/reclaim", h.apiAction(ownerOnly, func(ctx context.Context, r apiRequest) error { return ctl.Reclaim(ctx, r.Name, r.Token) }))
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.log.Warn("setup page: cross-origin request refused", "origin", r.Header.Get("Origin"), "path", r.URL.Path)
		http.Error(w, "cross-origin request refused: use the setup page itself", http.StatusForbidden)
	}))
	h.next = cop.Handler(mux)
	return h
}

// ServeHTTP checks the Host, then serves.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.allowedHost(r.Host) {
		h.log.Warn("setup page: foreign host refused", "host", r.Host)
		http.Error(w, "unknown host name: open the setup page as http://gateway.local or by the gateway's address", http.StatusMisdirectedRequest)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	h.next.ServeHTTP(w, r)
}

// allowedHost accepts the names a LAN browser or the setup command use; a
// page from another site that rebinds its own name to the gateway's
// address arrives with that name and is refused.
func (h *Handler) allowedHost(hostport string) bool {
	host := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		host = hh
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if host == "localhost" || strings.HasSuffix(host, ".local") || strings.HasSuffix(host, ".localhost") {
		return true
	}
	st := h.ctl.Status()
	if st.FQDN != "" && (host == st.FQDN || strings.HasSuffix(host, "."+st.FQDN)) {
		return true
	}
	return false
}

type view struct {
	S status.Status
	// Error is the refusal to show, Notice a success.
	Error, Notice string
	// Await is the name being switched to; Refresh reloads the page.
	Await   string
	Refresh bool
	// Form values to keep after an error.
	NameValue, EmailValue, ReclaimName string
	// ReclaimPossible offers the reclamation form prominently.
	ReclaimPossible bool
}

func (h *Handler) render(w http.ResponseWriter, code int, v view) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := page.Execute(w, v); err != nil {
		h.log.Warn("setup page: rendering", "error", err)
	}
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	st := h.ctl.Status()
	v := view{S: st}
	if await := r.URL.Query().Get("await"); await != "" {
		if st.Name == await && st.Certificate.Ready && st.URL != "" {
			http.Redirect(w, r, st.URL, http.StatusSeeOther)
			return
		}
		if st.Name != await && st.Pending != await {
			v.Error = "the gateway is not switching to " + await + " (any more)"
		} else {
			v.Await, v.Refresh = await, true
			if st.Certificate.PendingError != "" {
				v.Error = "the certificate for " + await + " is failing: " + st.Certificate.PendingError
			}
		}
	}
	h.render(w, http.StatusOK, v)
}

func (h *Handler) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.ctxTTL)
}

func awaitURL(name string) string { return "/?await=" + url.QueryEscape(name) }

func (h *Handler) formName(w http.ResponseWriter, r *http.Request) {
	name := strings.ToLower(strings.TrimSpace(r.PostFormValue("name")))
	if err := h.owner(r, r.PostFormValue("code")); err != nil {
		h.refuse(w, err, view{NameValue: name})
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	if err := h.ctl.ChooseName(ctx, name); err != nil {
		h.refuse(w, err, view{NameValue: name, ReclaimName: name, ReclaimPossible: isReclaimable(err)})
		return
	}
	http.Redirect(w, r, awaitURL(name), http.StatusSeeOther)
}

func (h *Handler) formEmail(w http.ResponseWriter, r *http.Request) {
	email := strings.TrimSpace(r.PostFormValue("email"))
	if err := h.owner(r, r.PostFormValue("code")); err != nil {
		h.refuse(w, err, view{EmailValue: email})
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	if err := h.ctl.SetEmail(ctx, email); err != nil {
		h.refuse(w, err, view{EmailValue: email})
		return
	}
	h.render(w, http.StatusOK, view{S: h.ctl.Status(), Notice: "A verification link was mailed to " + email + ": open it to confirm the address."})
}

func (h *Handler) formReclaimRequest(w http.ResponseWriter, r *http.Request) {
	name := strings.ToLower(strings.TrimSpace(r.PostFormValue("name")))
	ctx, cancel := h.ctx(r)
	defer cancel()
	if err := h.ctl.RequestReclaim(ctx, name); err != nil {
		h.refuse(w, err, view{ReclaimName: name, ReclaimPossible: true})
		return
	}
	h.render(w, http.StatusOK, view{S: h.ctl.Status(), ReclaimName: name, ReclaimPossible: true,
		Notice: "A reclamation token for " + name + " was mailed to its owner's verified address: enter it below."})
}

func (h *Handler) formReclaim(w http.ResponseWriter, r *http.Request) {
	name := strings.ToLower(strings.TrimSpace(r.PostFormValue("name")))
	token := strings.TrimSpace(r.PostFormValue("token"))
	if err := h.owner(r, r.PostFormValue("code")); err != nil {
		h.refuse(w, err, view{ReclaimName: name, ReclaimPossible: true})
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	if err := h.ctl.Reclaim(ctx, name, token); err != nil {
		h.refuse(w, err, view{ReclaimName: name, ReclaimPossible: true})
		return
	}
	http.Redirect(w, r, awaitURL(name), http.StatusSeeOther)
}

func isReclaimable(err error) bool {
	var e *cloudapi.Error
	return errors.As(err, &e) && e.Code == apierror.UnavailableNameReclamationPossible
}

// refuse shows the page again with the reason in plain words.
func (h *Handler) refuse(w http.ResponseWriter, err error, v view) {
	v.S = h.ctl.Status()
	v.Error = cloudapi.Explain(err)
	h.render(w, statusFor(err), v)
}

func statusFor(err error) int {
	var e *cloudapi.Error
	switch {
	case errors.As(err, &e) && e.Status >= 400 && e.Status < 500:
		return e.Status
	case errors.Is(err, cloudapi.ErrUnreachable):
		return http.StatusBadGateway
	case errors.Is(err, ErrInput):
		return http.StatusBadRequest
	case errors.Is(err, setupcode.ErrMissing), errors.Is(err, setupcode.ErrWrong):
		return http.StatusForbidden
	case errors.Is(err, setupcode.ErrTooManyAttempts):
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// ErrInput marks a controller error caused by what the owner typed.
var ErrInput = errors.New("invalid input")

func (h *Handler) apiStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.ctl.Status())
}

type apiRequest struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Token string `json:"token"`
	// Code is the setup code, for the changes that need it.
	Code string `json:"code"`
}

// Who may call an action: the owner (with the setup code), or anyone on
// the LAN.
const (
	ownerOnly = true
	anyone    = false
)

// owner checks the setup code given with r. Wrong codes are logged; codes
// refused for being over the limit are not, so a flood of guesses does
// not flood the log.
func (h *Handler) owner(r *http.Request, code string) error {
	if h.code == nil {
		return setupcode.ErrMissing
	}
	var client netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		client = ap.Addr()
	}
	err := h.code.Check(client, code)
	if errors.Is(err, setupcode.ErrWrong) {
		h.log.Warn("setup page: wrong setup code", "client", client.String(), "path", r.URL.Path)
	}
	return err
}

type apiAnswer struct {
	OK     bool          `json:"ok"`
	Error  string        `json:"error,omitempty"`
	Code   string        `json:"code,omitempty"`
	Status status.Status `json:"status"`
}

func (h *Handler) apiAction(needsOwner bool, do func(context.Context, apiRequest) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req apiRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiAnswer{Error: "malformed JSON: " + err.Error()})
			return
		}
		req.Name = strings.ToLower(strings.TrimSpace(req.Name))
		err := error(nil)
		if needsOwner {
			err = h.owner(r, req.Code)
		}
		ctx, cancel := h.ctx(r)
		defer cancel()
		if err == nil {
			err = do(ctx, req)
		}
		if err != nil {
			a := apiAnswer{Error: cloudapi.Explain(err), Status: h.ctl.Status()}
			var e *cloudapi.Error
			if errors.As(err, &e) {
				a.Code = e.Code
			}
			writeJSON(w, statusFor(err), a)
			return
		}
		writeJSON(w, http.StatusOK, apiAnswer{OK: true, Status: h.ctl.Status()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
