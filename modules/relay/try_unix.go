//go:build unix

package relay

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/gatehouse-project/gatehouse/modules/clienthello"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// tryConn is the destination of a copy from a tunnel stream when it is a
// socket: besides Write, it offers TryWrite (tunnel.TryWriter), a write
// that takes what the socket's send buffer has room for and never waits,
// which the session's reader uses to pass small data on without waking the
// copy's goroutine. It counts what TryWrite writes (count, and n for the
// copy's total), since the copy's ReadTo does not return those bytes.
type tryConn struct {
	*errWriter
	rc    syscall.RawConn
	count func(int)
	n     atomic.Int64
	// sock is the socket itself: net.Buffers writes with writev only to
	// the net package's own connections, not through a wrapper.
	sock net.Conn
}

// withTry returns w, able to TryWrite when its destination is a TCP or Unix
// socket (possibly behind a clienthello.Conn, whose writes go straight to
// the socket); count (may be nil) is called with what each TryWrite wrote.
func withTry(w *errWriter, count func(int)) io.Writer {
	c := w.w
	if hc, ok := c.(*clienthello.Conn); ok {
		c = hc.NetConn()
	}
	var sock interface {
		net.Conn
		syscall.Conn
	}
	switch c := c.(type) {
	case *net.TCPConn:
		sock = c
	case *net.UnixConn:
		sock = c
	default:
		return w
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return w
	}
	return &tryConn{errWriter: w, rc: rc, count: count, sock: sock}
}

var _ tunnel.BuffersWriter = (*tryConn)(nil)

// WriteBuffers writes v with one writev where the socket takes it all
// (tunnel.BuffersWriter): the frames a bulk transfer buffered leave in one
// system call rather than one each.
func (t *tryConn) WriteBuffers(v [][]byte) (int64, error) {
	bufs := net.Buffers(v)
	n, err := bufs.WriteTo(t.sock)
	if err != nil {
		t.err = err
	}
	return n, err
}

func (t *tryConn) tried() int64 { return t.n.Load() }

func (t *tryConn) TryWrite(p []byte) (int, error) {
	n := 0
	var werr error
	err := t.rc.Write(func(fd uintptr) bool {
		for len(p) > 0 {
			m, err := syscall.Write(int(fd), p)
			if m > 0 {
				n += m
				p = p[m:]
			}
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				// Full: the rest waits for the copy's own Write.
				return true
			case err != nil:
				werr = err
				return true
			case m <= 0:
				return true
			}
		}
		// Done, whatever happened: never wait for the socket here.
		return true
	})
	if werr == nil {
		werr = err
	}
	if werr != nil {
		t.err = werr
	}
	if n > 0 {
		t.n.Add(int64(n))
		if t.count != nil {
			t.count(n)
		}
	}
	return n, werr
}
