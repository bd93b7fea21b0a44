// Package regapi serves Gatehouse's registration API over HTTP: the
// compatible GET surface of the original registration server and the /v1
// JSON API. It is a plain http.Handler over a registry.Registry; the Caddy
// module wraps it and supplies the client address.
//
// It does not serve DNS or carry tunnel traffic; /v1/tunnel is handed to
// the function the caller configures.
package regapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/apierror"
	"github.com/gatehouse-project/gatehouse/modules/ratelimit"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Config configures the API.
type Config struct {
	// Zone is the DNS zone gateways are named in, without trailing dot.
	Zone string
	// ClientIP returns the address of the client of r. The Caddy adapter
	// uses Caddy's own client-IP handling (trusted proxies).
	ClientIP func(r *http.Request) netip.Addr
	// Tunnel serves GET /v1/tunnel (the WebSocket upgrade); nil answers 404.
	Tunnel http.Handler
	// SubscribeLimit, ReclaimLimit and EmailLimit guard the endpoints that
	// create names or send mail, per client IP. SubscribeLimit covers
	// every endpoint that creates a name: /subscribe, /v1/subscribe,
	// acme-dns's /register and custom domain claims.
	SubscribeLimit, ReclaimLimit, EmailLimit *ratelimit.Limiter
	// MaxBodyBytes bounds /v1 request bodies.
	MaxBodyBytes int64
	// OnError is told of internal errors (the client only sees a 500).
	OnError func(r *http.Request, err error)
	// Operator reports whether a bearer token is the cloud operator's,
	// comparing in constant time. The operator may list the zone and
	// manage the zone's own ACME challenge (TXT records at
	// _acme-challenge.ZONE, for the cloud's wildcard certificate) through
	// /v1/zones and /v1/records, and nothing else. Nil: no operator.
	Operator func(token string) bool
	// Nodes lists the live cloud nodes for GET /v1/nodes; nil answers an
	// empty list (a single node: agents keep one tunnel through DNS).
	Nodes NodeLister
	// ACMEDNSRegister turns on acme-dns's POST /register, which creates
	// a gateway with a random name for anyone who asks (SubscribeLimit
	// applies). Off, /register answers 404 as if absent.
	ACMEDNSRegister bool
	// Domains serves /v1/domains, the gateways' custom domains; nil
	// answers 404 there.
	Domains *registry.Domains
}

// API is the registration API handler.
type API struct {
	reg *registry.Registry
	cfg Config
	mux *http.ServeMux
	now func() time.Time
}

// New returns the API over reg.
func New(reg *registry.Registry, cfg Config) *API {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = remoteAddrIP
	}
	cfg.Zone = strings.ToLower(strings.TrimSuffix(cfg.Zone, "."))
	a := &API{reg: reg, cfg: cfg, mux: http.NewServeMux(), now: time.Now}
	a.routes()
	return a
}

func (a *API) routes() {
	m := a.mux
	m.HandleFunc("GET /subscribe", withQuery(a.compatSubscribe))
	m.HandleFunc("GET /unsubscribe", withQuery(a.allowedFrom(a.compatUnsubscribe)))
	m.HandleFunc("GET /reclaim", withQuery(a.compatReclaim))
	m.HandleFunc("GET /ping", withQuery(a.allowedFrom(a.compatPing)))
	m.HandleFunc("GET /dnsconfig", withQuery(a.allowedFrom(a.compatDNSConfig)))
	m.HandleFunc("GET /info", withQuery(a.allowedFrom(a.compatInfo)))
	m.HandleFunc("GET /setemail", withQuery(a.allowedFrom(a.compatSetEmail)))
	m.HandleFunc("GET /verifyemail", withQuery(a.compatVerifyEmail))
	m.HandleFunc("GET /revokeemail", withQuery(a.compatRevokeEmail))
	m.HandleFunc("GET /connectivity-check", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("OK"))
	})

	m.HandleFunc("POST /v1/subscribe", a.v1Subscribe)
	m.HandleFunc("POST /v1/ping", a.authed(a.v1Ping))
	m.HandleFunc("GET /v1/info", a.authed(a.v1Info))
	m.HandleFunc("GET /v1/nodes", a.authed(a.v1Nodes))
	m.HandleFunc("POST /v1/email", a.v1Email)
	m.HandleFunc("POST /v1/reclaim", a.v1Reclaim)
	m.HandleFunc("DELETE /v1/gateway", a.v1Unsubscribe)
	m.HandleFunc("GET /v1/discover", a.v1Discover)
	m.HandleFunc("GET /v1/zones", a.scoped(a.v1Zones))
	m.HandleFunc("GET /v1/records", a.scoped(a.v1GetRecords))
	m.HandleFunc("POST /v1/records", a.scoped(a.v1AppendRecords))
	m.HandleFunc("PUT /v1/records", a.scoped(a.v1SetRecords))
	m.HandleFunc("DELETE /v1/records", a.scoped(a.v1DeleteRecords))
	m.HandleFunc("GET /v1/tunnel", func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Tunnel == nil {
			writeError(w, http.StatusNotFound, apierror.NotFound, "no tunnel endpoint on this server")
			return
		}
		a.cfg.Tunnel.ServeHTTP(w, r)
	})
	a.acmeDNSRoutes()
	a.domainRoutes()
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apierror.NotFound, "no such endpoint")
	})
}

// ServeHTTP answers one API request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		// CORS preflight for the /v1 API, which a web app calls with a
		// bearer token and a JSON body.
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	defer func() {
		// A bug in one request must not take the server down, nor show
		// a stack to the client.
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			writeError(w, http.StatusInternalServerError, apierror.InternalError, "internal error")
		}
	}()
	if r.URL.Path == "/v1/tunnel" && a.cfg.Tunnel != nil {
		// The WebSocket upgrade needs the server's own writer to hijack.
		// The client's address goes along for the handshake's allowfrom
		// check (see refusedFrom).
		a.cfg.Tunnel.ServeHTTP(w, r.WithContext(registry.WithClientIP(r.Context(), a.cfg.ClientIP(r))))
		return
	}
	a.mux.ServeHTTP(&reportingWriter{ResponseWriter: w, req: r, onError: a.cfg.OnError}, r)
}

// fqdn is the DNS name of a gateway, without trailing dot.
func (a *API) fqdn(name string) string { return name + "." + a.cfg.Zone }

func (a *API) limited(w http.ResponseWriter, r *http.Request, l *ratelimit.Limiter) bool {
	ok, wait := l.Allow(a.cfg.ClientIP(r), a.now())
	if ok {
		return false
	}
	secs := int(wait/time.Second) + 1
	w.Header().Set("Retry-After", itoa(secs))
	writeError(w, http.StatusTooManyRequests, apierror.RateLimited, "too many requests from your address; retry later")
	return true
}

func remoteAddrIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, name, reason string) {
	writeJSON(w, status, apierror.Body{Error: name, Reason: reason})
}

// errorTable maps registry errors to the API's status codes and names, in
// one place, for both surfaces.
var errorTable = []struct {
	err    error
	status int
	name   string
}{
	{registry.ErrReclaimable, http.StatusBadRequest, apierror.UnavailableNameReclamationPossible},
	{registry.ErrNameTaken, http.StatusBadRequest, apierror.UnavailableName},
	{registry.ErrReservedName, http.StatusBadRequest, apierror.UnavailableName},
	{registry.ErrInvalidName, http.StatusBadRequest, apierror.InvalidName},
	{registry.ErrTokenMismatch, http.StatusBadRequest, apierror.ReclamationTokenMismatch},
	{registry.ErrExpiredToken, http.StatusBadRequest, apierror.ExpiredToken},
	{registry.ErrNoEmail, http.StatusBadRequest, apierror.NoEmail},
	{registry.ErrInvalidEmail, http.StatusBadRequest, apierror.InvalidEmail},
	{registry.ErrInvalidInput, http.StatusBadRequest, apierror.BadRequest},
	{registry.ErrUnsupportedType, http.StatusBadRequest, apierror.UnsupportedType},
	{registry.ErrConflict, http.StatusBadRequest, apierror.Conflict},
	{registry.ErrTooMany, http.StatusBadRequest, apierror.TooManyRecords},
	{registry.ErrTooLarge, http.StatusBadRequest, apierror.RecordsTooLarge},
	{registry.ErrOutsideSubtree, http.StatusForbidden, apierror.OutsideSubtree},
	{registry.ErrDisabled, http.StatusForbidden, apierror.GatewayDisabled},
	{registry.ErrInvalidDomain, http.StatusBadRequest, apierror.InvalidDomain},
	{registry.ErrDomainTaken, http.StatusConflict, apierror.DomainTaken},
	{registry.ErrNotDelegated, http.StatusUnprocessableEntity, apierror.DomainNotDelegated},
	{registry.ErrTooManyDomains, http.StatusBadRequest, apierror.TooManyDomains},
	{registry.ErrNotFound, http.StatusNotFound, apierror.NotFound},
	{registry.ErrNoMailer, http.StatusServiceUnavailable, apierror.EmailUnavailable},
}

func writeRegistryError(w http.ResponseWriter, err error) {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			writeError(w, e.status, e.name, err.Error())
			return
		}
	}
	if rw, ok := w.(*reportingWriter); ok && rw.onError != nil {
		rw.onError(rw.req, err)
	}
	writeError(w, http.StatusInternalServerError, apierror.InternalError, "internal error")
}

// reportingWriter carries the request to writeRegistryError so that an
// internal error is reported with it.
type reportingWriter struct {
	http.ResponseWriter
	req     *http.Request
	onError func(*http.Request, error)
}

func (rw *reportingWriter) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func isNotFound(err error) bool { return errors.Is(err, registry.ErrNotFound) }
func isInvalidName(err error) bool {
	return errors.Is(err, registry.ErrInvalidName) || errors.Is(err, registry.ErrReservedName)
}
func isExpired(err error) bool { return errors.Is(err, registry.ErrExpiredToken) }
