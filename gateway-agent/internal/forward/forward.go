// Package forward is the gateway agent's side of agent-to-agent port
// forwarding. On the source gateway, a Manager keeps local TCP listeners,
// each mapped to {gateway, ip, remote}: every accepted connection becomes a
// tunnel stream that the cloud checks against its rules and relays to the
// target gateway. On the target gateway, a Target checks its own allow-list
// of internal destinations (deny by default), dials the destination and
// relays.
//
// It does not keep the tunnel up (an Opener does), does not serve the REST
// API (localapi does) and does not read the configuration file.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// Errors callers branch on (the API maps them to its error names).
var (
	// ErrLocalInUse: the local address is already forwarded, or another
	// program listens on it.
	ErrLocalInUse = errors.New("local address in use")
	// ErrNotFound: no forwarding listens on that local address.
	ErrNotFound = errors.New("no such forwarding")
	// ErrClosed: the manager has been closed.
	ErrClosed = errors.New("forwarding manager closed")
)

// Spec is one forwarding, as in the original design: connections to Local
// go to Remote on IP behind Gateway.
type Spec struct {
	// Local is the local listen address (host:port) or a bare port, which
	// listens on 127.0.0.1 only: opening a forwarded service to the LAN
	// is a choice ("0.0.0.0:2022"). Port 0 picks a free port.
	Local string `json:"local"`
	// Gateway is the target gateway's name.
	Gateway string `json:"gateway"`
	// IP is the internal destination's address behind the target.
	IP string `json:"ip"`
	// Remote is the destination's port.
	Remote uint16 `json:"remote"`
}

// ListenAddr is Local as a listen address.
func (s Spec) ListenAddr() string {
	if _, err := strconv.ParseUint(s.Local, 10, 16); err == nil {
		return net.JoinHostPort("127.0.0.1", s.Local)
	}
	return s.Local
}

// Validate checks the fields.
func (s Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if s.Local == "" {
		return bad("local is required (a port, or host:port)")
	}
	host, port, err := net.SplitHostPort(s.ListenAddr())
	if err != nil {
		return bad("local %q: want a port or host:port", s.Local)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return bad("local %q: bad port", s.Local)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return bad("local %q: the host must be an IP address or localhost", s.Local)
		}
	}
	if s.Gateway == "" {
		return bad("gateway is required")
	}
	if len(s.Gateway) > 63 || strings.ContainsAny(s.Gateway, " /:") {
		return bad("gateway %q is not a gateway name", s.Gateway)
	}
	a, err := netip.ParseAddr(s.IP)
	if err != nil || a.Zone() != "" {
		return bad("ip %q: want the destination's IP address", s.IP)
	}
	if s.Remote == 0 {
		return bad("remote is required (the destination's port)")
	}
	return nil
}

// Opener opens a stream through the tunnel; client.Client.Open, or the
// agent's wrapper that finds its current client. It returns
// client.ErrNotConnected while the tunnel is down.
type Opener interface {
	Open(ctx context.Context, init tunnel.Initiator) (*tunnel.Stream, error)
}

// Info is a forwarding as listed by the API.
type Info struct {
	Spec
	// Origin is "config" (opened at start from the configuration file)
	// or "api".
	Origin string `json:"origin"`
	// Active is the number of connections being relayed now.
	Active int64 `json:"active"`
	// Opened and Refused count the connections since the listener opened.
	Opened  uint64 `json:"opened"`
	Refused uint64 `json:"refused"`
	// LastError is the last refusal's reason, empty if none.
	LastError string `json:"last_error,omitempty"`
}

// Manager keeps the local listeners of the forwardings. Create it with
// NewManager; Close stops everything it started.
type Manager struct {
	opener Opener
	log    *slog.Logger
	// wait is how long a connection accepted while the tunnel is down
	// waits for it before it is closed.
	wait time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	listeners map[string]*listener // by actual listen address
	closed    bool
}

// Settings tune a Manager.
type Settings struct {
	// TunnelWait is how long a connection accepted while the tunnel is
	// down waits for it to come back before it is closed; 0 closes it at
	// once. The listener itself stays open either way.
	TunnelWait time.Duration
	Logger     *slog.Logger
}

// NewManager returns a Manager that opens streams with opener.
func NewManager(opener Opener, s Settings) *Manager {
	m := &Manager{opener: opener, log: s.Logger, wait: s.TunnelWait, listeners: map[string]*listener{}}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m
}

type listener struct {
	spec   Spec
	origin string
	ln     net.Listener

	active          atomic.Int64
	opened, refused atomic.Uint64
	mu              sync.Mutex
	lastErr         string
	conns           map[net.Conn]struct{}
}

// Add opens a local listener for spec; origin is "config" or "api". The
// returned Info's Local is the actual address (with the port chosen when
// it was 0).
func (m *Manager) Add(spec Spec, origin string) (Info, error) {
	if err := spec.Validate(); err != nil {
		return Info{}, err
	}
	spec.Gateway = strings.ToLower(spec.Gateway)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Info{}, ErrClosed
	}
	ln, err := net.Listen("tcp", spec.ListenAddr())
	if err != nil {
		if errors.Is(err, errAddrInUse) {
			return Info{}, fmt.Errorf("%w: %s: %w", ErrLocalInUse, spec.ListenAddr(), err)
		}
		return Info{}, fmt.Errorf("%w: listening on %s: %w", ErrInvalid, spec.ListenAddr(), err)
	}
	spec.Local = ln.Addr().String()
	l := &listener{spec: spec, origin: origin, ln: ln, conns: map[net.Conn]struct{}{}}
	m.listeners[spec.Local] = l
	m.wg.Go(func() { m.serve(l) })
	m.log.Info("forward listening", "local", spec.Local, "gateway", spec.Gateway, "ip", spec.IP, "remote", spec.Remote, "origin", origin)
	return l.info(), nil
}

// Remove closes the forwarding listening on local (as listed, or a bare
// port when only one forwarding has it) and the connections it relays.
func (m *Manager) Remove(local string) (Info, error) {
	m.mu.Lock()
	l := m.find(local)
	if l != nil {
		delete(m.listeners, l.spec.Local)
	}
	m.mu.Unlock()
	if l == nil {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, local)
	}
	l.close()
	m.log.Info("forward removed", "local", l.spec.Local, "gateway", l.spec.Gateway)
	return l.info(), nil
}

func (m *Manager) find(local string) *listener {
	if l, ok := m.listeners[local]; ok {
		return l
	}
	if _, err := strconv.ParseUint(local, 10, 16); err != nil {
		return nil
	}
	var found *listener
	for addr, l := range m.listeners {
		if _, port, _ := net.SplitHostPort(addr); port == local {
			if found != nil {
				return nil // ambiguous: the full address is needed
			}
			found = l
		}
	}
	return found
}

// List returns the forwardings, ordered by local address.
func (m *Manager) List() []Info {
	m.mu.Lock()
	out := make([]Info, 0, len(m.listeners))
	for _, l := range m.listeners {
		out = append(out, l.info())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Local, b.Local) })
	return out
}

// Close closes every listener and connection and waits for their
// goroutines.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	ls := m.listeners
	m.listeners = map[string]*listener{}
	m.mu.Unlock()
	m.cancel()
	for _, l := range ls {
		l.close()
	}
	m.wg.Wait()
}

func (l *listener) info() Info {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Info{Spec: l.spec, Origin: l.origin, Active: l.active.Load(), Opened: l.opened.Load(), Refused: l.refused.Load(), LastError: l.lastErr}
}

// close stops accepting and ends the connections being relayed.
func (l *listener) close() {
	_ = l.ln.Close()
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.conns = nil
	l.mu.Unlock()
}

// track registers c so that close ends it; false when the listener is
// already closed.
func (l *listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns == nil {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *listener) untrack(c net.Conn) {
	l.mu.Lock()
	if l.conns != nil {
		delete(l.conns, c)
	}
	l.mu.Unlock()
}

// serve accepts until the listener is closed.
func (m *Manager) serve(l *listener) {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || m.ctx.Err() != nil {
				return
			}
			// Out of descriptors and the like: back off as net/http does,
			// so the loop does not spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("forward accept failed", "local", l.spec.Local, "error", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-m.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		if !l.track(c) {
			_ = c.Close()
			return
		}
		m.wg.Go(func() {
			defer l.untrack(c)
			defer c.Close()
			m.handle(l, c)
		})
	}
}

// handle opens the stream for one local connection and relays.
func (m *Manager) handle(l *listener, c net.Conn) {
	spec := l.spec
	clientAddr := ""
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		clientAddr = netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port()).String()
	}
	log := m.log.With("local", spec.Local, "gateway", spec.Gateway, "ip", spec.IP, "remote", spec.Remote, "client", clientAddr)
	init := tunnel.Initiator{Gatename: spec.Gateway, Ip: spec.IP, Port: spec.Remote, ClientAddr: clientAddr}
	st, err := m.open(init, l)
	if err != nil {
		reason := err.Error()
		var refused *tunnel.RefusedError
		if errors.As(err, &refused) {
			reason = refused.Reason
		}
		l.refused.Add(1)
		l.mu.Lock()
		l.lastErr = reason
		l.mu.Unlock()
		log.Warn("forward refused: closing the local connection", "reason", reason)
		return
	}
	defer st.Close()
	l.opened.Add(1)
	l.active.Add(1)
	defer l.active.Add(-1)
	log.Info("forward opened")
	start := time.Now()
	res := relay.Conns(m.ctx, c, st, relay.Counts{})
	log.Info("forward closed", "bytes_out", res.AToB, "bytes_in", res.BToA, "duration", time.Since(start).Round(time.Millisecond))
}

// openTimeout bounds one attempt at opening a stream: the cloud's own
// open_timeout (10s by default) plus room for the round trips.
const openTimeout = 20 * time.Second

// open opens the stream, waiting up to m.wait for a tunnel that is down.
// It retries only while no stream could be sent (no session, or a session
// that just died): a refusal is final.
func (m *Manager) open(init tunnel.Initiator, l *listener) (*tunnel.Stream, error) {
	deadline := time.Now().Add(m.wait)
	const retryEvery = 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(m.ctx, openTimeout)
		st, err := m.opener.Open(ctx, init)
		cancel()
		if err == nil {
			return st, nil
		}
		var refused *tunnel.RefusedError
		if errors.As(err, &refused) || m.ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		if time.Now().Add(retryEvery).After(deadline) {
			if errors.Is(err, client.ErrNotConnected) {
				return nil, fmt.Errorf("%w (waited %s)", err, m.wait)
			}
			return nil, err
		}
		if attempt == 0 {
			m.log.Info("tunnel down: the connection waits for it", "local", l.spec.Local, "wait", m.wait, "error", err)
		}
		t := time.NewTimer(retryEvery)
		select {
		case <-m.ctx.Done():
			t.Stop()
			return nil, m.ctx.Err()
		case <-t.C:
		}
	}
}
