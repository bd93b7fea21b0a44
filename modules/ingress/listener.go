package ingress

import (
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Listener wraps a listener: its accept loop takes each connection from
// the inner listener at once and gives it its own goroutine, so a client
// slow to send its ClientHello never holds up the others; connections for
// the local server come out of Accept, the others are relayed or closed.
//
// Ownership: the Listener owns the accept loop, which Close stops and
// waits for. Each connection's goroutine ends by itself: the ClientHello
// wait is bounded by PeekTimeout, the stream opening by OpenTimeout, an
// alert's goodbye by a second or so, a connection for the server is
// handed over or closed once the listener closes, and a relay ends with
// its client connection or its tunnel, so at the latest when the hub
// closes the tunnels. Close deliberately leaves relays running: on a
// config reload Caddy closes the old listener while the socket and the hub
// live on, and a tunneled connection has nothing to do with the HTTP
// server being replaced.
type Listener struct {
	net.Listener
	r *Router

	// conns hands connections to Accept. It is unbuffered, so that no
	// connection is left in a queue when the listener closes.
	conns chan net.Conn

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error

	loopDone chan struct{} // closed when the accept loop has ended
	loopErr  error         // the inner listener's lasting error; set before loopDone closes
}

// NewListener returns a Listener routing inner's connections with r. It
// starts the accept loop; Close stops it.
func NewListener(inner net.Listener, r *Router) *Listener {
	l := &Listener{
		Listener: inner,
		r:        r,
		conns:    make(chan net.Conn),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

// Accept returns the next connection for the local server.
func (l *Listener) Accept() (net.Conn, error) {
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

func (l *Listener) closedError() error {
	return &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
}

// Close stops accepting and waits for the accept loop. It does not end
// the relays in progress (see Listener).
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.Listener.Close()
	})
	<-l.loopDone
	return l.closeErr
}

func (l *Listener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *Listener) acceptLoop() {
	defer close(l.loopDone)
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			delay = 0
			go l.r.handle(c, l.toServer)
			continue
		}
		if l.closed() {
			return
		}
		if !temporary(err) {
			l.r.cfg.Logger.Error("accepting connections", zap.Error(err))
			l.loopErr = err
			return
		}
		// As net/http does: a temporary error (out of file descriptors, a
		// deadline a sibling listener set) is retried after a growing pause.
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.r.cfg.Logger.Warn("accepting connections; retrying", zap.Error(err), zap.Duration("delay", delay))
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

// toServer hands c to the server through Accept, reporting whether it
// did; a closed listener closes c instead.
func (l *Listener) toServer(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		_ = c.Close()
		return false
	}
}
