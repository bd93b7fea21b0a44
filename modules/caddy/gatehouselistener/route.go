package gatehouselistener

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/clienthello"
	"github.com/gatehouse-project/gatehouse/modules/relay"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// Why a connection was not relayed down a tunnel (the reason label of
// gatehouse_ingress_refused_total). The first four go on to Caddy, the
// others are closed.
const (
	reasonNoSession      = "no_session"      // a gateway name without a live tunnel
	reasonOpenFailed     = "open_failed"     // the agent refused the stream or did not answer
	reasonNotTLS         = "not_tls"         // plain HTTP or another protocol
	reasonMalformed      = "malformed"       // not a usable ClientHello (Caddy's TLS answers it)
	reasonTimeout        = "timeout"         // no complete ClientHello within peek_timeout
	reasonClientGone     = "client_gone"     // the client hung up or failed before its ClientHello ended
	reasonListenerClosed = "listener_closed" // meant for Caddy, but the server stopped accepting
)

// listener is the wrapped listener. Its accept loop takes each connection
// from the inner listener at once and gives it its own goroutine, so a
// client slow to send its ClientHello never holds up the others; the
// connections meant for Caddy come out of Accept.
//
// Ownership: the listener owns the accept loop, which Close stops and
// waits for. Each connection's goroutine ends by itself: the ClientHello
// wait is bounded by peek_timeout and the stream opening by open_timeout,
// a connection for Caddy is handed over or closed once the listener
// closes, and a relay ends with its client connection or its tunnel
// session, so at the latest when the app's hub closes the sessions.
// Close deliberately leaves relays running: on a config reload Caddy
// closes the old listener while the socket and the hub live on, and a
// tunneled connection has nothing to do with the HTTP server being
// replaced.
type listener struct {
	net.Listener
	r *router

	// conns hands connections to Accept. It is unbuffered, so that no
	// connection is left in a queue when the listener closes.
	conns chan net.Conn

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error

	loopDone chan struct{} // closed when the accept loop has ended
	loopErr  error         // the inner listener's lasting error; set before loopDone closes
}

func newListener(inner net.Listener, r *router) *listener {
	if r.logger == nil {
		r.logger = zap.NewNop()
	}
	if r.metrics == nil {
		r.metrics = defaultMetrics
	}
	l := &listener{
		Listener: inner,
		r:        r,
		conns:    make(chan net.Conn),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

// Accept returns the next connection that is not for a tunnel.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.closedError()
	case <-l.loopDone:
		if l.loopErr != nil {
			return nil, l.loopErr
		}
		return nil, l.closedError()
	}
}

func (l *listener) closedError() error {
	return &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
}

// Close stops accepting and waits for the accept loop. It does not end
// the relays in progress (see listener).
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.Listener.Close()
	})
	<-l.loopDone
	return l.closeErr
}

func (l *listener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *listener) acceptLoop() {
	defer close(l.loopDone)
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			delay = 0
			go l.handle(c)
			continue
		}
		if l.closed() {
			return
		}
		if !temporary(err) {
			l.r.logger.Error("accepting connections", zap.Error(err))
			l.loopErr = err
			return
		}
		// As net/http does: a temporary error (out of file descriptors, a
		// deadline a sibling listener set) is retried after a growing pause.
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.r.logger.Warn("accepting connections; retrying", zap.Error(err), zap.Duration("delay", delay))
		t := time.NewTimer(delay)
		select {
		case <-l.done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// handle routes one connection: down its gateway's tunnel, or to Caddy.
func (l *listener) handle(c net.Conn) {
	info, rc, err := clienthello.Peek(c, l.r.maxHello, l.r.peekTimeout)
	if err != nil {
		switch reason := peekFailure(err); reason {
		case reasonNotTLS, reasonMalformed:
			l.toCaddy(rc, reason)
		default:
			l.r.metrics.refuse(reason)
			l.r.metrics.route(routeClosed)
			_ = rc.Close()
		}
		return
	}
	name, ok := l.r.gateway(info.ServerName)
	if !ok {
		// The cloud's own sites, or no SNI at all.
		l.toCaddy(rc, "")
		return
	}
	s, ok := l.r.lookup(name)
	if !ok {
		l.toCaddy(rc, reasonNoSession)
		return
	}
	// Not tied to the listener: on a reload the stream is still wanted.
	ctx, cancel := context.WithTimeout(context.Background(), l.r.openTimeout)
	st, err := s.Open(ctx, tunnel.Meta{Gateway: name, ServerName: info.ServerName, Client: clientAddr(c)})
	cancel()
	if err != nil {
		// Nothing was sent down the tunnel yet, so the ClientHello can
		// still go to Caddy, which serves the offline page.
		l.r.logger.Info("gateway did not accept the stream",
			zap.String("gateway", name), zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
		l.toCaddy(rc, reasonOpenFailed)
		return
	}
	l.relay(rc, st, name)
}

// peekFailure classifies an error of clienthello.Peek.
func peekFailure(err error) string {
	switch {
	case errors.Is(err, clienthello.ErrNotTLS):
		return reasonNotTLS
	case errors.Is(err, clienthello.ErrMalformed), errors.Is(err, clienthello.ErrTooLarge):
		return reasonMalformed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return reasonTimeout
	}
	return reasonClientGone
}

// toCaddy hands c to the server through Accept; reason, when set, says
// why a gateway's connection was not relayed.
func (l *listener) toCaddy(c net.Conn, reason string) {
	if reason != "" {
		l.r.metrics.refuse(reason)
	}
	select {
	case l.conns <- c:
		l.r.metrics.route(routeCaddy)
	case <-l.done:
		l.r.metrics.refuse(reasonListenerClosed)
		l.r.metrics.route(routeClosed)
		_ = c.Close()
	}
}

// clientAddr is the client's address for the stream's Meta, invalid when
// the connection has no IP address.
func clientAddr(c net.Conn) netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else if a := c.RemoteAddr(); a != nil {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	if !ap.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// relay copies bytes both ways between the client and the stream until
// both directions have ended (see relay.Conns), then closes both.
func (l *listener) relay(c *clienthello.Conn, st hub.Stream, name string) {
	m := l.r.metrics
	m.route(routeTunnel)
	m.opened.Inc()
	m.active.Inc()
	defer m.active.Dec()
	start := time.Now()
	res := relay.Conns(context.Background(), c, st, relay.Counts{
		AToB: func(n int) { m.toGateway.Add(float64(n)) },
		BToA: func(n int) { m.toClient.Add(float64(n)) },
	})
	_ = c.Close()
	_ = st.Close()
	l.r.logger.Debug("relay ended",
		zap.String("gateway", name),
		zap.String("remote", c.RemoteAddr().String()),
		zap.Int64("bytes_to_gateway", res.AToB),
		zap.Int64("bytes_to_client", res.BToA),
		zap.Duration("duration", time.Since(start)),
		zap.NamedError("to_gateway_error", res.AToBErr),
		zap.NamedError("to_client_error", res.BToAErr))
}
