// Package localapi is the gateway agent's REST API for programs on the
// gateway itself: it opens, lists and closes agent-to-agent forwardings, and
// shows the agent's status. It listens on loopback only, and every request carries the key kept in the
// state directory (api.key, mode 0600) as "Authorization: Bearer KEY", so
// only a user who can read the state directory (the agent's own, or root)
// can use it. Errors are JSON: {"error": NAME, "message": REASON}.
//
// GET /v1/status answers the agent's status, with each tunnel's cloud node
// and state.
//
// It is not the setup page's API (setupui, for the LAN browser) and does not
// forward anything itself: a Forwards (the forward.Manager) does.
package localapi

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/forward"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/status"
)

// KeyFile is the API key's file in the state directory.
const KeyFile = "api.key"

// Forwards carries out the API's requests (forward.Manager).
type Forwards interface {
	Add(spec forward.Spec, origin string) (forward.Info, error)
	Remove(local string) (forward.Info, error)
	List() []forward.Info
}

// ErrUnauthorized: no key, or the wrong one.
var ErrUnauthorized = errors.New("missing or wrong API key")

// errorNames maps the errors callers branch on to the API's error names and
// HTTP statuses, in one place.
var errorNames = []struct {
	err    error
	name   string
	status int
}{
	{ErrUnauthorized, "unauthorized", http.StatusUnauthorized},
	{forward.ErrInvalid, "invalid_forward", http.StatusBadRequest},
	{forward.ErrLocalInUse, "local_in_use", http.StatusConflict},
	{forward.ErrNotFound, "not_found", http.StatusNotFound},
	{forward.ErrClosed, "shutting_down", http.StatusServiceUnavailable},
}

// Error is the body of every error answer.
type Error struct {
	// Error is the error's name: unauthorized, invalid_forward,
	// local_in_use, not_found, bad_request, shutting_down, internal.
	Error string `json:"error"`
	// Message says why, in words.
	Message string `json:"message"`
}

// List is the answer of GET /v1/forwards.
type List struct {
	Forwards []forward.Info `json:"forwards"`
}

// Handler serves the API.
type Handler struct {
	status  func() status.Status
	keyHash [sha256.Size]byte
	fw      Forwards
	log     *slog.Logger
	mux     *http.ServeMux
}

// New returns the API's handler for key.
func New(key string, fw Forwards, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{keyHash: sha256.Sum256([]byte(key)), fw: fw, log: log, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /v1/forwards", h.list)
	h.mux.HandleFunc("POST /v1/forwards", h.add)
	h.mux.HandleFunc("DELETE /v1/forwards/{local}", h.remove)
	h.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		if h.status == nil {
			writeJSON(w, http.StatusNotFound, Error{Error: "not_found", Message: "this agent serves no status"})
			return
		}
		writeJSON(w, http.StatusOK, h.status())
	})
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, Error{Error: "not_found", Message: r.Method + " " + r.URL.Path + " is not part of the API"})
	})
	return h
}

// WithStatus makes GET /v1/status answer fn's status (the agent's, as in
// the status file: the name, the certificate, each tunnel and its node).
// Call it before serving.
func (h *Handler) WithStatus(fn func() status.Status) *Handler {
	h.status = fn
	return h
}

// ServeHTTP checks the key, then serves.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		h.log.Warn("local api: request without the right key refused", "path", r.URL.Path, "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="gateway-agent"`)
		h.fail(w, ErrUnauthorized)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

// authorized compares the bearer key in constant time: both sides are
// hashed first, so neither the key's content nor its length leaks through
// timing.
func (h *Handler) authorized(r *http.Request) bool {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(key)))
	return subtle.ConstantTimeCompare(got[:], h.keyHash[:]) == 1
}

func (h *Handler) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, List{Forwards: h.fw.List()})
}

func (h *Handler) add(w http.ResponseWriter, r *http.Request) {
	var spec forward.Spec
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		writeJSON(w, http.StatusBadRequest, Error{Error: "bad_request", Message: "the body must be a JSON object {local, gateway, ip, remote}: " + err.Error()})
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeJSON(w, http.StatusBadRequest, Error{Error: "bad_request", Message: "trailing data after the JSON object"})
		return
	}
	info, err := h.fw.Add(spec, "api")
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, info)
}

func (h *Handler) remove(w http.ResponseWriter, r *http.Request) {
	info, err := h.fw.Remove(r.PathValue("local"))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// fail answers err with its name from errorNames.
func (h *Handler) fail(w http.ResponseWriter, err error) {
	for _, e := range errorNames {
		if errors.Is(err, e.err) {
			writeJSON(w, e.status, Error{Error: e.name, Message: err.Error()})
			return
		}
	}
	h.log.Error("local api", "error", err)
	writeJSON(w, http.StatusInternalServerError, Error{Error: "internal", Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// LoadOrCreateKey returns the key in stateDir/api.key, creating it (32
// random bytes in hex, mode 0600, written atomically) on first use. A key
// file readable by others is refused rather than used.
func LoadOrCreateKey(stateDir string) (string, error) {
	path := filepath.Join(stateDir, KeyFile)
	key, err := ReadKey(stateDir)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	key = hex.EncodeToString(b)
	if err := state.WriteFileAtomic(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the api key: %w", err)
	}
	return key, nil
}

// ReadKey reads the key in stateDir/api.key.
func ReadKey(stateDir string) (string, error) {
	path := filepath.Join(stateDir, KeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("api key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 && os.PathSeparator == '/' {
		return "", fmt.Errorf("api key %s is readable by other users (mode %v): remove it, the agent makes a new one", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api key: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("api key %s is empty", path)
	}
	return key, nil
}

// CheckListen accepts only loopback addresses: the API is for programs on
// the gateway, never for the LAN.
func CheckListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("api_listen %q: want host:port on loopback: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.IsLoopback() {
		return fmt.Errorf("api_listen %q: must be a loopback address (127.0.0.1:PORT or [::1]:PORT)", addr)
	}
	return nil
}
