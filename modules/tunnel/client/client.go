// Package client is the gateway agent's end of the tunnel: it keeps a
// session open to the cloud's tunnel endpoint (a WebSocket over HTTPS),
// reconnects with jittered exponential backoff when it drops (cut short,
// still jittered, when a probe sees the cloud come back), and hands every
// stream the cloud opens (one per ingress TLS connection) to a Handler. It
// also writes PROXY protocol v2 headers, so that a local upstream learns the
// original client's address.
//
// It does not decide where a stream goes (the Handler does), does not obtain
// the gateway's token or certificate, and does not terminate TLS.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// ReasonShutdown is what the cloud is told when Run's context ends.
const ReasonShutdown = tunnel.ReasonAgentShutdown

// Default probing while backing off (see Backoff.ProbeInterval).
const (
	// probeTimeout is the least time a probe is given to connect.
	probeTimeout = 2 * time.Second

	DefaultProbeInterval   = 500 * time.Millisecond
	DefaultReconnectJitter = time.Second
)

// Backoff spaces reconnection attempts: the n-th consecutive failure waits
// Min·2ⁿ, capped at Max, minus a random part of up to Jitter of it. Zero
// fields take the defaults of DefaultBackoff.
type Backoff struct {
	// Min is the delay after the first failure. Default 1s.
	Min time.Duration
	// Max caps the delay. Default 1 minute.
	Max time.Duration
	// Jitter is the random fraction of each delay, in (0, 1]: a delay d
	// becomes uniform in [d·(1-Jitter), d]. Default 0.5. It cannot be
	// turned off: it is what spreads the reconnections of many agents
	// after the cloud restarts.
	Jitter float64
	// ResetAfter is how long a session must have lasted to count as
	// healthy, so that the next failure starts again from Min. Default 1
	// minute.
	ResetAfter time.Duration
	// ProbeInterval is how often, while waiting out a delay, the client
	// opens a TCP connection to the tunnel endpoint's host and port (and
	// closes it at once) to learn whether the cloud answers. Once a probe
	// that failed is followed by one that succeeds, the cloud is back:
	// the client reconnects after a random pause of up to
	// ReconnectJitter instead of waiting out a delay that may have grown
	// to Max during the outage. A cloud that answers but refuses (a bad
	// token) never shortens the delays, as no probe fails. Default
	// DefaultProbeInterval; negative turns probing off.
	ProbeInterval time.Duration
	// ReconnectJitter bounds the random pause between the cloud coming
	// back and the reconnection, which spreads the agents of a restarted
	// cloud over that time. Default DefaultReconnectJitter.
	ReconnectJitter time.Duration
}

// DefaultBackoff returns the values zero Backoff fields stand for.
func DefaultBackoff() Backoff {
	return Backoff{Min: time.Second, Max: time.Minute, Jitter: 0.5, ResetAfter: time.Minute,
		ProbeInterval: DefaultProbeInterval, ReconnectJitter: DefaultReconnectJitter}
}

func (b Backoff) withDefaults() Backoff {
	d := DefaultBackoff()
	if b.Min <= 0 {
		b.Min = d.Min
	}
	if b.Max <= 0 {
		b.Max = d.Max
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	if b.Jitter <= 0 || b.Jitter > 1 {
		b.Jitter = d.Jitter
	}
	if b.ResetAfter <= 0 {
		b.ResetAfter = d.ResetAfter
	}
	if b.ProbeInterval == 0 {
		b.ProbeInterval = d.ProbeInterval
	}
	if b.ReconnectJitter <= 0 {
		b.ReconnectJitter = d.ReconnectJitter
	}
	return b
}

// reconnectPause is the random wait between the cloud coming back and the
// reconnection, uniform in [0, ReconnectJitter).
func (b Backoff) reconnectPause() time.Duration {
	return rand.N(b.withDefaults().ReconnectJitter)
}

// Delay is the wait after the attempt-th consecutive failure (from 0).
func (b Backoff) Delay(attempt int) time.Duration {
	b = b.withDefaults()
	// Double step by step: Min<<attempt would overflow long before the
	// loop ends at the cap.
	d := b.Min
	for i := 0; i < attempt && d < b.Max; i++ {
		if d > b.Max/2 {
			d = b.Max
			break
		}
		d *= 2
	}
	return d - time.Duration(rand.Float64()*b.Jitter*float64(d))
}

// healthy reports whether a session that lasted connected resets the
// series of delays.
func (b Backoff) healthy(connected time.Duration) bool {
	return connected >= b.withDefaults().ResetAfter
}

// State is a snapshot of the client's connection.
type State struct {
	// Connected is true while a session is up.
	Connected bool
	// Since is when Connected last changed (or Run started).
	Since time.Time
	// LastError is why the last attempt failed or the last session ended
	// (a *tunnel.RefusedError when the cloud refused the handshake). It
	// stays set after a reconnection; Connected tells the present.
	LastError error
	// RTT is the current session's last keepalive round trip.
	RTT time.Duration
	// Failures counts consecutive failed attempts, a session shorter than
	// Backoff.ResetAfter counting as one; 0 while connected.
	Failures int
	// Transport is how the current or last session was carried:
	// tunnel.SealedUpgrade, tunnel.RawUpgrade (a cloud without the sealed
	// transport, or a path that ends TLS on the way), or
	// tunnel.TransportWebSocket (a cloud without either, or WebSocketOnly).
	Transport string
}

// Client keeps the agent's tunnel up. Set the fields, then call Run.
type Client struct {
	// URL is the cloud's tunnel endpoint, e.g. wss://api.box.example.org/v1/tunnel.
	URL string
	// Name is the gateway's name and Token its secret; they authenticate
	// the handshake. The token is never logged.
	Name  string
	Token string
	// Handler serves each stream the cloud opens, in its own goroutine. It
	// must answer the stream with Stream.Ack (after dialling its upstream,
	// so that a failure reaches the cloud as a refusal) and return once the
	// stream is done; the client closes the stream after it returns. The
	// stream's Initiator says where it goes and who the client is.
	Handler func(*tunnel.Stream)
	// Backoff spaces reconnection attempts.
	Backoff Backoff
	// HTTPClient dials the WebSocket: its Transport carries the TLS
	// configuration (roots, client certificates) and proxy settings. Nil
	// means http.DefaultClient.
	HTTPClient *http.Client
	// HTTPHeader is added to the upgrade request (e.g. User-Agent).
	HTTPHeader http.Header
	// WebSocketOnly stops the client from offering the raw transport
	// (tunnel.RawUpgrade) beside the WebSocket, for a path whose proxies
	// pass WebSocket upgrades only. Clouds that do not know the raw
	// transport are served the WebSocket either way.
	WebSocketOnly bool
	// Config tunes the session; its HandshakeTimeout also bounds the dial.
	Config tunnel.Config
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger

	running atomic.Bool
	// noSealed is set once the cloud's sealed-transport binding did not
	// match ours (see tunnel.SealedUpgrade).
	noSealed atomic.Bool

	mu      sync.Mutex
	state   State
	session *tunnel.Session
}

// ErrRunning is returned by Run when the client is already running.
var ErrRunning = errors.New("client already running")

func (c *Client) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Client) validate() error {
	switch {
	case c.URL == "":
		return errors.New("client: no URL")
	case c.Name == "" || c.Token == "":
		return errors.New("client: no name or token")
	case c.Handler == nil:
		return errors.New("client: no handler")
	}
	return tunnel.VerifyConfig(c.Config)
}

// State returns the current connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state
	if c.session != nil {
		st.RTT = c.session.RTT()
	}
	return st
}

// Run keeps the tunnel up until ctx ends: it connects, handshakes, serves
// streams with Handler, and on any failure waits per Backoff and starts
// again. It returns ctx's error once the session is closed and every
// Handler has returned, or at once for an invalid configuration.
func (c *Client) Run(ctx context.Context) error {
	if err := c.validate(); err != nil {
		return err
	}
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	var handlers sync.WaitGroup
	defer handlers.Wait()

	c.mu.Lock()
	c.state = State{Since: time.Now()}
	c.mu.Unlock()

	attempt := 0
	for {
		connected, err := c.runSession(ctx, &handlers)
		if ctx.Err() != nil {
			c.setDisconnected(nil, attempt)
			return ctx.Err()
		}
		if c.Backoff.healthy(connected) {
			attempt = 0
		}
		delay := c.Backoff.Delay(attempt)
		attempt++
		c.setDisconnected(err, attempt)
		c.logger().Warn("tunnel down", "error", err, "retry_in", delay, "failures", attempt)
		if err := c.wait(ctx, delay); err != nil {
			return err
		}
	}
}

// wait waits out delay, or less once probes see the cloud come back (see
// Backoff.ProbeInterval). It returns ctx's error if ctx ends first. The
// probes run on the caller's goroutine, each bounded by probeTimeout.
func (c *Client) wait(ctx context.Context, delay time.Duration) error {
	b := c.Backoff.withDefaults()
	deadline := time.NewTimer(delay)
	defer deadline.Stop()
	addr, dial := c.probeTarget()
	if b.ProbeInterval < 0 || addr == "" || delay <= b.ProbeInterval {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		}
	}
	tick := time.NewTicker(b.ProbeInterval)
	defer tick.Stop()
	sawDown := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
		// A probe that is merely slow (a loaded host) must not pass for
		// a cloud that is down, or any success after it would cut the
		// delays short: its timeout is generous.
		pctx, cancel := context.WithTimeout(ctx, max(b.ProbeInterval, probeTimeout))
		conn, err := dial(pctx, "tcp", addr)
		cancel()
		if err != nil {
			sawDown = true
			continue
		}
		_ = conn.Close()
		if !sawDown {
			continue
		}
		pause := b.reconnectPause()
		c.logger().Info("cloud answers again", "reconnect_in", pause)
		deadline.Reset(pause)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		}
	}
}

// probeTarget is the host:port the probes connect to, and how: through
// the HTTP transport's own dialer when it has one (so that a custom
// resolution applies to the probe as to the tunnel), else a net.Dialer.
// Behind an HTTP proxy the cloud is not reached directly: addr is "" and
// the client only backs off.
func (c *Client) probeTarget() (addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	u, err := url.Parse(c.URL)
	if err != nil || u.Hostname() == "" {
		return "", nil
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "ws" || u.Scheme == "http" {
			port = "80"
		}
	}
	dial = (&net.Dialer{}).DialContext
	rt := http.DefaultTransport
	if c.HTTPClient != nil && c.HTTPClient.Transport != nil {
		rt = c.HTTPClient.Transport
	}
	if tr, ok := rt.(*http.Transport); ok {
		if tr.Proxy != nil {
			// The WebSocket request goes out as http or https.
			hu := *u
			hu.Scheme = map[string]string{"ws": "http", "wss": "https"}[u.Scheme]
			if hu.Scheme == "" {
				hu.Scheme = u.Scheme
			}
			if p, err := tr.Proxy(&http.Request{URL: &hu}); err != nil || p != nil {
				return "", nil
			}
		}
		if tr.DialContext != nil {
			dial = tr.DialContext
		}
	}
	return net.JoinHostPort(u.Hostname(), port), dial
}

// runSession makes one connection and serves it until it ends. It returns
// how long the session was up (0 if it never came up) and why it ended.
func (c *Client) runSession(ctx context.Context, handlers *sync.WaitGroup) (time.Duration, error) {
	cfg := c.Config.WithDefaults()
	dctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	conn, err := c.connect(dctx, tunnel.ProtocolVersion)
	for v := uint16(tunnel.ProtocolVersion - 1); tunnel.IsVersionRefusal(err) && v >= tunnel.MinProtocolVersion; v-- {
		// A cloud older than this agent: step down until it accepts
		// (every cloud accepts MinProtocolVersion). Initiators from a
		// version 1 cloud carry a forward's source in Gatename, which
		// tunnel.MetaFromInitiator reads; none sends early data.
		c.logger().Info("cloud refused protocol version, retrying with an older one", "version", v+1, "error", err)
		conn, err = c.connect(dctx, v)
	}
	if err != nil {
		return 0, err
	}
	// The session's reader starts each stream's handler itself: a new
	// stream reaches its handler without a hop through an Accept loop.
	// handlers.Add runs on the reader, which has ended once the session's
	// Close below returns, so it comes before Run's handlers.Wait.
	s, err := tunnel.ServeSession(conn, cfg, func(st *tunnel.Stream) {
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			defer st.Close()
			c.Handler(st)
		}()
	})
	if err != nil {
		_ = conn.Close()
		return 0, err
	}
	start := time.Now()
	c.mu.Lock()
	c.session = s
	c.state.Connected = true
	c.state.Since = start
	c.state.Failures = 0
	c.mu.Unlock()
	c.logger().Info("tunnel up", "url", c.URL, "gateway", c.Name)

	select {
	case <-ctx.Done():
	case <-s.Done():
	}
	if ctx.Err() != nil {
		_ = s.CloseWithReason(ReasonShutdown)
	} else {
		_ = s.Close()
	}
	return time.Since(start), s.Err()
}

// connect dials the endpoint and runs the handshake announcing version.
func (c *Client) connect(ctx context.Context, version uint16) (tunnel.Conn, error) {
	conn, transport, _, err := c.dial(ctx)
	if errors.Is(err, tunnel.ErrSealedBinding) {
		// Something between us ends TLS: the sealed transport cannot
		// work on this path, the raw one can.
		c.logger().Warn("the cloud's TLS binding differs from ours; not offering the sealed transport", "error", err)
		c.noSealed.Store(true)
		conn, transport, _, err = c.dial(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.URL, err)
	}
	c.mu.Lock()
	c.state.Transport = transport
	c.mu.Unlock()
	if err := tunnel.ClientHandshakeVersion(ctx, conn, c.Name, c.Token, version); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

func (c *Client) setDisconnected(err error, failures int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Connected {
		c.state.Since = time.Now()
	}
	c.state.Connected = false
	c.session = nil
	if err != nil {
		c.state.LastError = err
	}
	c.state.Failures = failures
}

// ErrNotConnected is returned by Open while no session is up.
var ErrNotConnected = errors.New("tunnel not connected")

// Open opens a stream toward the cloud over the current session (for
// agent-to-agent forwarding: init names the target gateway and its
// internal destination) and returns once the far end has acknowledged it.
// The error carries the cloud's or the target's reason for a refusal.
func (c *Client) Open(ctx context.Context, init tunnel.Initiator) (*tunnel.Stream, error) {
	c.mu.Lock()
	s := c.session
	c.mu.Unlock()
	if s == nil {
		return nil, ErrNotConnected
	}
	return s.Open(ctx, init)
}
