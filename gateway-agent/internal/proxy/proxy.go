// Package proxy serves the gateway's public and LAN HTTPS traffic: TLS is
// terminated here with the gateway's own certificate (HTTP/2 offered), and
// requests go to the gateway's web app through httputil.ReverseProxy as
// faithfully as Caddy's reverse_proxy does it: the Host the visitor asked
// for, X-Forwarded-For/-Host/-Proto (and optionally RFC 7239 Forwarded)
// set from what the agent knows, hop-by-hop and forged forwarding headers
// dropped, WebSockets and server-sent events streamed, an http:// or
// https:// upstream. A failing upstream gets visitors a plain 502 or 504
// page; the detail goes to the log and Health. Connections come from two
// places: tunnel streams (whose RemoteAddr is the client the cloud saw)
// and the agent's LAN HTTPS listener.
//
// In passthrough mode it terminates nothing: each connection is relayed as
// raw TCP to an upstream that terminates TLS itself, optionally preceded by
// a PROXY protocol v2 header.
//
// It does not obtain certificates or open the tunnel.
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// Config configures a Server.
type Config struct {
	// Upstream is the web app (proxy mode).
	Upstream *url.URL
	// UpstreamAddr is host:port of the upstream (passthrough mode).
	UpstreamAddr string
	// Passthrough relays raw TCP instead of terminating TLS.
	Passthrough bool
	// ProxyProtocol precedes each relayed connection with a PROXY v2
	// header (passthrough mode).
	ProxyProtocol bool
	// GetCertificate supplies the certificate (proxy mode).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// DialTimeout bounds connecting to the upstream. Default 10s.
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for the upstream's response
	// headers once the request is sent; 0 waits as long as the client
	// does (as Caddy's reverse_proxy).
	ResponseTimeout time.Duration
	// UpstreamHost is the Host the upstream receives. Empty keeps the
	// one the client asked for (the app sees its public name);
	// UpstreamHostPort stands for the upstream URL's host:port.
	UpstreamHost string
	// UpstreamTLS verifies an https:// upstream: its RootCAs (nil: the
	// system roots) or InsecureSkipVerify for a self-signed app.
	UpstreamTLS *tls.Config
	// Forwarded adds an RFC 7239 Forwarded header beside the
	// X-Forwarded-* ones.
	Forwarded bool
	Logger    *slog.Logger
}

// UpstreamHostPort, as Config.UpstreamHost, sends the upstream URL's
// host:port as Host (Caddy's placeholder of the same name).
const UpstreamHostPort = "{upstream_hostport}"

// spoofable are request headers that claim to describe the original
// client or the public side of the connection. The agent is the first
// proxy the app sees, so whatever a visitor put there is a lie: they are
// dropped (ReverseProxy itself drops Forwarded and X-Forwarded-For, -Host
// and -Proto before Rewrite, and the hop-by-hop headers).
var spoofable = []string{
	"X-Real-Ip", "X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded-Ssl",
	"X-Forwarded-Scheme", "X-Original-Forwarded-For", "X-Client-Ip", "True-Client-Ip",
}

// Server serves connections until Shutdown.
type Server struct {
	cfg  Config
	log  *slog.Logger
	http *http.Server
	tun  *chanListener
	// transport reaches the upstream (proxy mode).
	transport *http.Transport
	// upstreamIP is UpstreamAddr when it is an address, not a name
	// (passthrough): dialed without resolving it again each time.
	upstreamIP netip.AddrPort

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	listeners []net.Listener
	health    Health
}

// New returns a Server; call HandleStream for tunnel streams and Serve for
// LAN listeners.
func New(cfg Config) (*Server, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Passthrough && cfg.UpstreamAddr == "" {
		return nil, errors.New("proxy: passthrough needs the upstream's host:port")
	}
	if !cfg.Passthrough && (cfg.Upstream == nil || cfg.GetCertificate == nil) {
		return nil, errors.New("proxy: an upstream URL and a certificate source are required")
	}
	if !cfg.Passthrough && cfg.UpstreamAddr == "" {
		cfg.UpstreamAddr = hostPort(cfg.Upstream)
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if ap, err := netip.ParseAddrPort(cfg.UpstreamAddr); err == nil && cfg.Passthrough {
		s.upstreamIP = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if !cfg.Passthrough {
		s.transport = s.newTransport()
		s.http = &http.Server{
			Handler: batched(s.reverseProxy()),
			TLSConfig: &tls.Config{
				GetCertificate: cfg.GetCertificate,
				MinVersion:     tls.VersionTLS12,
				// HTTP/2 offered, so a client that asks gets it: with
				// h2 here, Serve sets up net/http's HTTP/2 server as
				// ServeTLS would (the listener ends TLS, see
				// tlsListener).
				NextProtos: []string{"h2", "http/1.1"},
			},
			ConnContext:       connContext,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		s.tun = newChanListener()
		s.wg.Go(func() {
			// Serve returns when Shutdown closes the listener.
			_ = s.http.Serve(s.tlsListener(s.tun))
		})
	}
	return s, nil
}

// tlsListener ends TLS on ln's connections, over a batchConn each.
func (s *Server) tlsListener(ln net.Listener) net.Listener {
	return batchListener{Listener: ln, cfg: s.http.TLSConfig}
}

// hostPort is u's host:port, the scheme's port when it names none.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// newTransport is the client side toward the upstream: HTTP/1.1 or, for
// an https:// upstream that offers it, HTTP/2; upgrades (WebSockets)
// always go over HTTP/1.1, as the protocol needs.
func (s *Server) newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // the app is local: never through an environment proxy
	d := &net.Dialer{Timeout: s.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	t.DialContext = d.DialContext
	t.ResponseHeaderTimeout = s.cfg.ResponseTimeout
	t.MaxIdleConnsPerHost = 32
	if s.cfg.UpstreamTLS != nil {
		t.TLSClientConfig = s.cfg.UpstreamTLS.Clone()
	}
	return t
}

// reverseProxy forwards to the upstream as Caddy's reverse_proxy does: the
// Host the client asked for (unless UpstreamHost says otherwise), the
// X-Forwarded-* headers replaced with what the agent knows (the original
// client's address, which for a tunnel stream is the stream's RemoteAddr;
// the host it asked for; https), responses streamed.
//
// FlushInterval stays 0: ReverseProxy already flushes every write of a
// text/event-stream response or one of unknown length (-1), which covers
// server-sent events and long polls, while a download of known length is
// written in large TLS records, in copyBufferSize pieces (see batch.go).
func (s *Server) reverseProxy() http.Handler {
	up := s.cfg.Upstream
	upHost := s.cfg.UpstreamHost
	if upHost == UpstreamHostPort {
		upHost = up.Host
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			// SetURL sets the upstream's host: keep the client's.
			pr.Out.Host = pr.In.Host
			if upHost != "" {
				pr.Out.Host = upHost
			}
			for _, h := range spoofable {
				pr.Out.Header.Del(h)
			}
			// Out's X-Forwarded-For is empty here (ReverseProxy drops
			// the client's before Rewrite): the client's address alone.
			pr.SetXForwarded()
			if s.cfg.Forwarded {
				pr.Out.Header.Set("Forwarded", forwardedHeader(pr.In))
			}
		},
		Transport:      s.transport,
		BufferPool:     &bufferPool{},
		ModifyResponse: s.upstreamAnswered,
		ErrorHandler:   s.upstreamFailed,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// forwardedHeader is the RFC 7239 element for r: for (the client's
// address), host and proto.
func forwardedHeader(r *http.Request) string {
	var b strings.Builder
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		ip := ap.Addr().Unmap()
		if ip.Is6() {
			// An IPv6 node is quoted and bracketed (section 6).
			b.WriteString(`for="[` + ip.String() + `]";`)
		} else {
			b.WriteString("for=" + ip.String() + ";")
		}
	} else {
		b.WriteString("for=unknown;")
	}
	b.WriteString("host=" + quoteIfNeeded(r.Host) + ";proto=")
	if r.TLS != nil {
		b.WriteString("https")
	} else {
		b.WriteString("http")
	}
	return b.String()
}

// quoteIfNeeded returns v as an RFC 7230 token when it is one, else as a
// quoted string (a host with a port has a colon, which a token may not).
func quoteIfNeeded(v string) string {
	token := v != ""
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			token = false
			break
		}
	}
	if token {
		return v
	}
	return strconv.Quote(v)
}

// upstreamAnswered records that the upstream answers.
func (s *Server) upstreamAnswered(*http.Response) error {
	s.setHealth(nil)
	return nil
}

// upstreamFailed answers a visitor whose request the upstream did not
// serve. The page says what happened in plain words and nothing about the
// inside of the gateway (no address, no error text: the visitor may be
// anyone on the internet); the detail goes to the log and the status,
// under a reference the page shows so the owner can find it.
func (s *Server) upstreamFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The visitor left: nothing to answer, and no fault of the app.
		s.log.Debug("client went away before the upstream answered", "path", r.URL.Path)
		return
	}
	code, title, text := http.StatusBadGateway, "Gateway app unavailable", "The gateway is online, but its web application is not answering."
	if isTimeout(err) {
		code, title, text = http.StatusGatewayTimeout, "Gateway app too slow", "The gateway is online, but its web application did not answer in time."
	}
	ref := reference()
	s.log.Warn("upstream failed", "ref", ref, "status", code, "upstream", s.cfg.Upstream.Redacted(), "method", r.Method, "path", r.URL.Path, "error", err)
	s.setHealth(fmt.Errorf("%s %s: %w", r.Method, s.cfg.Upstream.Redacted(), err))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Retry-After", "10")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width, initial-scale=1\"><title>%d %s</title><h1>%s</h1><p>%s Please try again in a moment.</p><p><small>Reference %s.</small></p>\n",
		code, title, title, text, ref)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// reference is a short random label that ties a visitor's error page to
// its log line.
func reference() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Health is what the agent last learnt about its upstream, from proxied
// requests and from RunHealthChecks.
type Health struct {
	// Checked is when the upstream was last tried; zero before.
	Checked time.Time
	// Healthy tells whether that try succeeded.
	Healthy bool
	// LastError is the last failure, with the upstream's address and the
	// error: for the owner, never for visitors.
	LastError   string
	LastErrorAt time.Time
}

// Health reports the upstream's health.
func (s *Server) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

func (s *Server) setHealth(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.health.Checked, s.health.Healthy = now, err == nil
	if err != nil {
		s.health.LastError, s.health.LastErrorAt = err.Error(), now
	}
}

// RunHealthChecks connects to the upstream every interval until ctx ends
// or the server shuts down, so the status shows a dead app before a
// visitor finds it. A connection (and the TLS handshake, for an https://
// upstream) is enough: the check must not disturb the app nor depend on
// one of its paths.
func (s *Server) RunHealthChecks(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.checkOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) checkOnce(ctx context.Context) {
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", s.cfg.UpstreamAddr)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		was := s.Health()
		if was.Healthy || was.Checked.IsZero() {
			s.log.Warn("upstream unreachable", "upstream", s.cfg.UpstreamAddr, "error", err)
		}
		s.setHealth(fmt.Errorf("connecting to %s: %w", s.cfg.UpstreamAddr, err))
		return
	}
	defer c.Close()
	if s.cfg.Upstream != nil && s.cfg.Upstream.Scheme == "https" {
		// A bare connection would make the app log a failed handshake
		// at each check; a handshake also finds a certificate the
		// agent does not trust before a visitor does.
		cfg := &tls.Config{}
		if s.transport.TLSClientConfig != nil {
			cfg = s.transport.TLSClientConfig.Clone()
		}
		cfg.ServerName = s.cfg.Upstream.Hostname()
		hctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
		err := tls.Client(c, cfg).HandshakeContext(hctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.setHealth(fmt.Errorf("TLS with %s: %w", s.cfg.UpstreamAddr, err))
			return
		}
	}
	s.setHealth(nil)
}

// HandleStream serves one tunnel stream; it is client.Client's Handler and
// returns when the stream is done.
func (s *Server) HandleStream(st *tunnel.Stream) {
	if s.cfg.Passthrough {
		var hdr []byte
		if s.cfg.ProxyProtocol { // relay drops it otherwise: not built for nothing
			hdr = client.StreamProxyHeader(st)
		}
		s.relay(st, hdr)
		return
	}
	if err := st.Ack(true, ""); err != nil {
		return
	}
	c := newTrackedConn(st)
	if !s.tun.push(c) {
		_ = c.Close()
		return
	}
	select {
	case <-c.done:
	case <-s.ctx.Done():
	}
}

// Serve accepts LAN connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		_ = ln.Close()
		return http.ErrServerClosed
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	if !s.cfg.Passthrough {
		return s.http.Serve(s.tlsListener(ln))
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.wg.Go(func() {
			var hdr []byte
			if s.cfg.ProxyProtocol {
				src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
				dst, _ := netip.ParseAddrPort(c.LocalAddr().String())
				hdr = client.AppendProxyHeader(nil, src, dst)
			}
			s.relay(c, hdr)
		})
	}
}

// acker is a connection that must be answered before data flows (a tunnel
// stream).
type acker interface {
	Ack(ok bool, message string) error
}

// earlyTaker is a tunnel stream, whose first bytes may have come with it
// (tunnel.Stream.Early).
type earlyTaker interface {
	Early() []byte
}

// relay copies between c and a new connection to the upstream until both
// directions are done; hdr (a PROXY header) goes first when set.
func (s *Server) relay(c net.Conn, hdr []byte) {
	defer c.Close()
	// Keep-alive is set after the Ack (see below), not by the dial: its
	// four system calls would come between the connect and the early
	// data, on every new connection's critical path.
	d := net.Dialer{Timeout: s.cfg.DialTimeout, KeepAlive: -1}
	var up net.Conn
	var err error
	if s.upstreamIP.IsValid() {
		// An address: no resolving, parsing and address list per
		// connection (DialContext's, about 6 µs of the agent's CPU on
		// the way from the Initiator to the connect).
		var tc *net.TCPConn
		if tc, err = d.DialTCP(s.ctx, "tcp", netip.AddrPort{}, s.upstreamIP); err == nil {
			up = tc
		}
	} else {
		up, err = d.DialContext(s.ctx, "tcp", s.cfg.UpstreamAddr)
	}
	if err != nil {
		s.log.Warn("upstream unreachable", "upstream", s.cfg.UpstreamAddr, "error", err)
		s.setHealth(fmt.Errorf("connecting to %s: %w", s.cfg.UpstreamAddr, err))
		if a, ok := c.(acker); ok {
			_ = a.Ack(false, "gateway upstream unreachable")
		}
		return
	}
	defer up.Close()
	s.setHealth(nil)
	if !s.cfg.ProxyProtocol {
		hdr = nil
	}
	// The PROXY header and the bytes that came with a tunnel stream (the
	// visitor's ClientHello) go to the upstream before the Ack, in one
	// write: the gateway's server starts its handshake while the Ack is on
	// its way to the cloud.
	if e, ok := c.(earlyTaker); ok {
		// Early returns a copy of its own: taken as it is when there is
		// no header to put before it.
		if early := e.Early(); len(hdr) == 0 {
			hdr = early
		} else {
			hdr = append(hdr, early...)
		}
	}
	if len(hdr) > 0 {
		if _, err := up.Write(hdr); err != nil {
			if a, ok := c.(acker); ok {
				_ = a.Ack(false, "gateway upstream unreachable")
			}
			return
		}
	}
	if a, ok := c.(acker); ok {
		if err := a.Ack(true, ""); err != nil {
			return
		}
	}
	// What the dial would have set by default (15 s idle and interval,
	// 9 probes): an upstream that vanishes without a reset still ends
	// the relay.
	if tc, ok := up.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true})
	}
	// The server's context ending (shutdown) closes both ends.
	relay.Conns(s.ctx, c, up, relay.Counts{})
}

// Shutdown stops accepting, closes the listeners, and waits for the
// connections to finish until ctx ends, then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	lns := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	var err error
	if s.http != nil {
		err = s.http.Shutdown(ctx)
		if err != nil {
			_ = s.http.Close()
		}
	}
	s.cancel()
	for _, ln := range lns {
		_ = ln.Close()
	}
	if s.tun != nil {
		_ = s.tun.Close()
	}
	s.wg.Wait()
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	return err
}

// chanListener is a net.Listener fed by HandleStream, so one http.Server
// serves tunnel streams like any other connection.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return tunnel.Addr("tunnel") }

// trackedConn tells HandleStream when the HTTP server is done with a
// stream (closed it, or closed it after hijacking it for a WebSocket).
type trackedConn struct {
	net.Conn
	done chan struct{}
	once sync.Once
}

func newTrackedConn(c net.Conn) *trackedConn {
	return &trackedConn{Conn: c, done: make(chan struct{})}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}
