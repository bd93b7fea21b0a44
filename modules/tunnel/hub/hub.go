// Package hub is the cloud's registry of live tunnels, by gateway name: the
// tunnel endpoint registers each agent's session here (as a Tunnel), and
// ingress, the offline page and forwarding look the tunnel up to open a
// stream. A newer tunnel for a name replaces (and closes) the older one.
//
// It does not authenticate agents (ServeTunnel's caller passes the
// authenticate function, backed by the registry), decide where ingress goes,
// nor know about Caddy; it keeps sessions of this process only (a multi-node
// deployment records which node holds which tunnel elsewhere).
package hub

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// ErrClosed is returned by Register once the hub is closed.
var ErrClosed = errors.New("hub closed")

// ErrLive is returned by RegisterUnless when the live tunnel of the name is
// kept.
var ErrLive = errors.New("hub: a live tunnel holds the name")

// Reasons sent to an agent whose session the hub closes.
const (
	ReasonReplaced = tunnel.ReasonReplaced
	ReasonShutdown = tunnel.ReasonCloudShutdown
)

// StreamHandler serves a stream that an agent opened toward the cloud
// (agent-to-agent forwarding). m says where it goes, which gateway opened
// it (Source) and from where (Client: the agent's address as the cloud saw
// it, never what the agent claims). It must answer the stream
// (Stream.Ack) and return once the stream is done.
type StreamHandler func(m tunnel.Meta, st *tunnel.Stream)

// Hub holds the live tunnels. The zero value is ready to use; Close stops
// it. Its methods are safe for concurrent use.
type Hub struct {
	// Logger receives one event per session registered, refused, replaced
	// or ended. Nil discards them. Tokens are never logged.
	Logger *slog.Logger

	// handler is swapped atomically because the hub outlives the config
	// that sets it: on a reload the new node installs its relay while
	// sessions keep reading the handler for each stream.
	handler atomic.Pointer[StreamHandler]

	mu sync.Mutex
	// observer hears which names gain and lose their live tunnel (the
	// cluster's directory); called under mu so that the order of its
	// calls is the order of the changes.
	observer func(name string, live bool)
	sessions map[string]Tunnel
	closed   bool
	stats    Stats
	// wg counts the goroutines the hub owns (one watcher per registered
	// session) and the ServeTunnel calls in progress; Close waits for them.
	wg sync.WaitGroup
}

// Stats are counters for metrics.
type Stats struct {
	// Live is the number of registered sessions.
	Live int
	// Registered counts every session registered since the hub started.
	Registered uint64
	// Replaced counts sessions closed because a newer one took the name.
	Replaced uint64
	// Dropped counts sessions closed by Drop.
	Dropped uint64
	// Ended counts sessions that ended (any cause) and left the hub.
	Ended uint64
	// Refused counts tunnel connections whose handshake failed.
	Refused uint64
	// Kinds are Live and Registered per kind of tunnel (Tunnel.Kind).
	Kinds map[string]KindStats
}

// KindStats are the counters of one kind of tunnel.
type KindStats struct {
	Live       int
	Registered uint64
}

// SetHandler makes h serve the streams agents open toward the cloud from
// now on, including on sessions already live. Nil refuses such streams.
func (h *Hub) SetHandler(fn StreamHandler) {
	if fn == nil {
		h.handler.Store(nil)
		return
	}
	h.handler.Store(&fn)
}

func key(name string) string { return strings.ToLower(name) }

func (h *Hub) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

// Observe makes fn hear, from now on, every name that gains a live tunnel
// (live true) or loses it (live false); it is first called for every name
// live now. A tunnel replaced by a newer one is not a loss. fn is called
// with the hub's lock held, in the order of the changes: it must not
// block nor call the hub. Nil stops the calls.
func (h *Hub) Observe(fn func(name string, live bool)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.observer = fn
	if fn == nil {
		return
	}
	for k := range h.sessions {
		fn(k, true)
	}
}

// Handler returns the current StreamHandler, nil when there is none.
func (h *Hub) Handler() StreamHandler {
	if fn := h.handler.Load(); fn != nil {
		return *fn
	}
	return nil
}

// Register makes s the live tunnel of name (compared case-insensitively).
// An older tunnel for the same name is closed, telling its gateway it was
// replaced. s leaves the hub by itself when it ends. After Close, Register
// closes s and returns ErrClosed.
func (h *Hub) Register(name string, s Tunnel) error {
	return h.RegisterUnless(name, s, nil)
}

// RegisterUnless is Register, except that when name has a live tunnel
// for which keep returns true, that tunnel stays and s is refused with
// ErrLive (s is not closed: the caller answers it). The check and the
// registration are one step, so two newcomers cannot both pass it.
func (h *Hub) RegisterUnless(name string, s Tunnel, keep func(old Tunnel) bool) error {
	k := key(name)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = s.CloseWithReason(ReasonShutdown)
		return ErrClosed
	}
	if h.sessions == nil {
		h.sessions = make(map[string]Tunnel)
	}
	old := h.sessions[k]
	if old == s {
		h.mu.Unlock()
		return nil
	}
	if old != nil && keep != nil && old.Err() == nil && keep(old) {
		h.mu.Unlock()
		return ErrLive
	}
	h.sessions[k] = s
	h.stats.Registered++
	if h.stats.Kinds == nil {
		h.stats.Kinds = make(map[string]KindStats)
	}
	ks := h.stats.Kinds[s.Kind()]
	ks.Registered++
	h.stats.Kinds[s.Kind()] = ks
	if old != nil {
		h.stats.Replaced++
	}
	if h.observer != nil {
		h.observer(k, true)
	}
	h.wg.Add(1)
	h.mu.Unlock()

	go h.watch(k, s)
	if old != nil {
		// Outside the lock: closing waits for the old session's goroutines.
		_ = old.CloseWithReason(ReasonReplaced)
		h.logger().Info("tunnel session replaced", "gateway", k)
	}
	return nil
}

// watch removes s from the hub once it ends.
func (h *Hub) watch(k string, s Tunnel) {
	defer h.wg.Done()
	<-s.Done()
	h.mu.Lock()
	if h.sessions[k] == s {
		delete(h.sessions, k)
		if h.observer != nil {
			h.observer(k, false)
		}
	}
	h.stats.Ended++
	h.mu.Unlock()
}

// Lookup returns the live tunnel of name.
func (h *Hub) Lookup(name string) (Tunnel, bool) {
	h.mu.Lock()
	s := h.sessions[key(name)]
	h.mu.Unlock()
	if s == nil || s.Err() != nil {
		return nil, false
	}
	return s, true
}

// Drop closes the session of name, if any, sending reason to the agent
// (for example "gateway expired" or "token revoked"). It reports whether
// there was one.
func (h *Hub) Drop(name, reason string) bool {
	k := key(name)
	h.mu.Lock()
	s := h.sessions[k]
	if s != nil {
		delete(h.sessions, k)
		h.stats.Dropped++
		if h.observer != nil {
			h.observer(k, false)
		}
	}
	h.mu.Unlock()
	if s == nil {
		return false
	}
	_ = s.CloseWithReason(reason)
	h.logger().Info("tunnel session dropped", "gateway", k, "reason", reason)
	return true
}

// Len is the number of live sessions.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// Names lists the gateways with a live session, sorted.
func (h *Hub) Names() []string {
	h.mu.Lock()
	names := make([]string, 0, len(h.sessions))
	for k := range h.sessions {
		names = append(names, k)
	}
	h.mu.Unlock()
	sort.Strings(names)
	return names
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stats
	st.Live = len(h.sessions)
	st.Kinds = make(map[string]KindStats, len(h.stats.Kinds))
	for kind, ks := range h.stats.Kinds {
		ks.Live = 0
		st.Kinds[kind] = ks
	}
	for _, s := range h.sessions {
		ks := st.Kinds[s.Kind()]
		ks.Live++
		st.Kinds[s.Kind()] = ks
	}
	return st
}

// Close closes every session (telling agents the cloud is shutting down),
// refuses new ones, and waits for the hub's goroutines and the ServeTunnel
// calls in progress to finish.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	sessions := h.sessions
	h.sessions = nil
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.CloseWithReason(ReasonShutdown)
		}()
	}
	wg.Wait()
	h.wg.Wait()
	return nil
}

// enter counts a ServeTunnel call, unless the hub is closed.
func (h *Hub) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

// ServeTunnel is the agent's tunnel endpoint: it accepts the upgrade to
// the raw transport or a WebSocket (tunnel.AcceptTransport), runs the tunnel handshake with authenticate (which must check
// that the key is the token of that name), registers the session under the
// agent's name and blocks until the session ends. Call it from the HTTP
// handler of the tunnel route.
//
// A failed upgrade is answered with an HTTP error;
// a failed handshake with a refusal Ack. Streams the agent opens go to
// the handler set with SetHandler.
func (h *Hub) ServeTunnel(w http.ResponseWriter, r *http.Request, authenticate func(ctx context.Context, name, key string) error, cfg tunnel.Config) {
	log := h.logger().With("remote", r.RemoteAddr)
	if err := tunnel.VerifyConfig(cfg); err != nil {
		log.Error("tunnel endpoint misconfigured", "error", err)
		http.Error(w, "tunnel endpoint misconfigured", http.StatusInternalServerError)
		return
	}
	cfg = cfg.WithDefaults()
	if !h.enter() {
		http.Error(w, ReasonShutdown, http.StatusServiceUnavailable)
		return
	}
	defer h.wg.Done()

	conn, transport, err := tunnel.AcceptTransport(w, r)
	if err != nil {
		log.Info("tunnel upgrade failed", "error", err)
		return
	}
	log = log.With("transport", transport)
	ctx, cancel := context.WithTimeout(r.Context(), cfg.HandshakeTimeout)
	hs, err := tunnel.ServerHandshake(ctx, conn, authenticate)
	cancel()
	if err != nil {
		_ = conn.Close()
		h.mu.Lock()
		h.stats.Refused++
		h.mu.Unlock()
		log.Info("tunnel handshake failed", "gateway", hs.Name, "error", err)
		return
	}
	s, err := tunnel.NewSession(conn, cfg)
	if err != nil {
		_ = conn.Close()
		log.Error("tunnel session", "gateway", hs.Name, "error", err)
		return
	}
	s.SetPeerVersion(hs.Version)
	log = log.With("gateway", key(hs.Name))
	wt := NewWebSocketTunnel(s, addrPort(r.RemoteAddr))
	if err := h.Register(hs.Name, wt); err != nil {
		log.Info("tunnel session refused", "error", err)
		return
	}
	log.Info("tunnel session started")
	h.serveStreams(hs.Name, wt)
	log.Info("tunnel session ended", "reason", s.Err())
}

// serveStreams hands the streams an agent opens to the handler (or
// refuses them) until the session ends, then waits for the handlers.
func (h *Hub) serveStreams(name string, wt *WebSocketTunnel) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := wt.s.Accept(context.Background())
		if err != nil {
			return
		}
		fn := h.handler.Load()
		if fn == nil {
			_ = st.Ack(false, "the cloud does not accept streams from agents")
			continue
		}
		m := metaFrom(name, wt.remote, st.Initiator())
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			(*fn)(m, st)
		}()
	}
}
