// Package proxy serves the gateway's public and LAN HTTPS traffic: TLS is
// terminated here with the gateway's own certificate, and requests go to
// the gateway's web app through httputil.ReverseProxy (WebSockets included),
// with X-Forwarded-For carrying the original client's address. Connections
// come from two places: tunnel streams (whose RemoteAddr is the client the
// cloud saw) and the agent's LAN HTTPS listener.
//
// In passthrough mode it terminates nothing: each connection is relayed as
// raw TCP to an upstream that terminates TLS itself, optionally preceded by
// a PROXY protocol v2 header.
//
// It does not obtain certificates or open the tunnel.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
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
	Logger      *slog.Logger
}

// Server serves connections until Shutdown.
type Server struct {
	cfg  Config
	log  *slog.Logger
	http *http.Server
	tun  *chanListener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	listeners []net.Listener
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
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if !cfg.Passthrough {
		s.http = &http.Server{
			Handler: s.reverseProxy(),
			TLSConfig: &tls.Config{
				GetCertificate: cfg.GetCertificate,
				MinVersion:     tls.VersionTLS12,
			},
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		s.tun = newChanListener()
		s.wg.Go(func() {
			// ServeTLS sets up HTTP/2 and returns when Shutdown closes
			// the listener.
			_ = s.http.ServeTLS(s.tun, "", "")
		})
	}
	return s, nil
}

// reverseProxy forwards to the upstream. SetXForwarded replaces whatever
// X-Forwarded-* the client sent with what the agent knows: the original
// client's address (the stream's RemoteAddr), the host it asked for, and
// https.
func (s *Server) reverseProxy() http.Handler {
	up := s.cfg.Upstream
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Warn("upstream failed", "upstream", up.String(), "error", err)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, "<!doctype html><title>Gateway app unavailable</title><h1>The gateway's web app is not answering</h1><p>The gateway is online, but its application at %s did not answer: %s</p>",
				html.EscapeString(up.Redacted()), html.EscapeString(err.Error()))
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// HandleStream serves one tunnel stream; it is client.Client's Handler and
// returns when the stream is done.
func (s *Server) HandleStream(st *tunnel.Stream) {
	if s.cfg.Passthrough {
		s.relay(st, client.StreamProxyHeader(st))
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
		return s.http.ServeTLS(ln, "", "")
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

// relay copies between c and a new connection to the upstream until both
// directions are done; hdr (a PROXY header) goes first when set.
func (s *Server) relay(c net.Conn, hdr []byte) {
	defer c.Close()
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	up, err := d.DialContext(s.ctx, "tcp", s.cfg.UpstreamAddr)
	if err != nil {
		s.log.Warn("upstream unreachable", "upstream", s.cfg.UpstreamAddr, "error", err)
		if a, ok := c.(acker); ok {
			_ = a.Ack(false, "gateway upstream unreachable")
		}
		return
	}
	defer up.Close()
	if a, ok := c.(acker); ok {
		if err := a.Ack(true, ""); err != nil {
			return
		}
	}
	if !s.cfg.ProxyProtocol {
		hdr = nil
	}
	if len(hdr) > 0 {
		if _, err := up.Write(hdr); err != nil {
			return
		}
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
