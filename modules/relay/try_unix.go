//go:build unix

package relay

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/gatehouse-project/gatehouse/modules/clienthello"
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
}

// withTry returns w, able to TryWrite when its destination is a TCP or Unix
// socket (possibly behind a clienthello.Conn, whose writes go straight to
// the socket); count (may be nil) is called with what each TryWrite wrote.
func withTry(w *errWriter, count func(int)) io.Writer {
	var sc syscall.Conn
	switch c := w.w.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	case *clienthello.Conn:
		switch nc := c.NetConn().(type) {
		case *net.TCPConn:
			sc = nc
		case *net.UnixConn:
			sc = nc
		}
	}
	if sc == nil {
		return w
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return w
	}
	return &tryConn{errWriter: w, rc: rc, count: count}
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
