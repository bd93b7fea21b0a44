//go:build unix

package relay

import (
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/gatehouse-project/gatehouse/modules/clienthello"
	"github.com/gatehouse-project/gatehouse/modules/sockio"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// rawReader is src, read with raw system calls when it is a socket (see
// sockio): a relay's read is the first system call after its data woke
// the process, the one that would otherwise wake the runtime's sysmon.
// A clienthello.Conn reads its socket that way itself.
func rawReader(src io.Reader) io.Reader {
	if c, ok := src.(net.Conn); ok {
		if raw := sockio.New(c); raw != nil {
			return raw
		}
	}
	return src
}

// tryConn is the destination of a copy from a tunnel stream when it is a
// socket: besides Write, it offers TryWrite (tunnel.TryWriter), a write
// that takes what the socket's send buffer has room for and never waits,
// which the session's reader uses to pass small data on without waking the
// copy's goroutine. It counts what TryWrite writes (count, and n for the
// copy's total), since the copy's ReadTo does not return those bytes.
type tryConn struct {
	*errWriter
	raw   *sockio.IO
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
	raw := sockio.New(sock)
	if raw == nil {
		return w
	}
	return &tryConn{errWriter: w, raw: raw, count: count, sock: sock}
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
	n, err := t.raw.TryWrite(p)
	if err != nil {
		t.err = err
	}
	if n > 0 {
		t.n.Add(int64(n))
		if t.count != nil {
			t.count(n)
		}
	}
	return n, err
}
