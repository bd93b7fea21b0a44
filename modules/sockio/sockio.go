// Package sockio reads and writes a socket the way the net package does,
// but with raw system calls: without the Go runtime's bookkeeping around a
// system call that may block.
//
// The net package's sockets are non-blocking, so their reads and writes
// return at once; the runtime still treats each as a call that might block
// (entersyscall), and the first one after the process was idle wakes its
// monitor thread, sysmon, which sleeps while every P is idle. On a relay
// that is every hop: a connection's data wakes the process, whose first read
// then pays a futex wake of another thread (an inter-processor interrupt on
// a virtual machine) before the bytes move on. perf of the tunnel
// benchmark's new connections put that wake at about 5% of the cloud's and
// the agent's CPU time, on the latency's path, and sysmon's own running at
// 8% more.
//
// It does what internal/poll's FD.Read and FD.Write do around the system
// call (locking, deadlines, waiting for readiness through the runtime's
// poller), through syscall.RawConn, and words errors as net.Conn's do. The
// system calls are raw on Linux; on other Unix systems they go through the
// syscall package (the bookkeeping stays); elsewhere New returns nil.
package sockio

import (
	"io"
	"net"
	"os"
	"syscall"
)

// IO reads and writes one socket with raw system calls. It is safe for
// concurrent use as the socket is: one reader and one writer at a time are
// serialized by the socket's own locks.
type IO struct {
	c    net.Conn
	rc   syscall.RawConn
	netw string // the network in errors, as net.OpError's Net
	// iov is WriteBuffers' vector, kept between calls; the socket's
	// write lock (held while RawConn.Write runs its function) guards it.
	iov []iovec
}

// New returns an IO for c when c is a TCP or Unix socket of the net
// package on a Unix system; nil otherwise (the caller then uses c's own
// Read and Write).
func New(c net.Conn) *IO {
	if !supported {
		return nil
	}
	var sc syscall.Conn
	var netw string
	switch c := c.(type) {
	case *net.TCPConn:
		sc, netw = c, "tcp"
	case *net.UnixConn:
		sc, netw = c, "unix"
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	if a := c.LocalAddr(); a != nil && a.Network() != "" {
		netw = a.Network()
	}
	return &IO{c: c, rc: rc, netw: netw}
}

// Read reads from the socket as net.Conn's Read does: it waits for data,
// honours the read deadline, and returns io.EOF once the peer has closed
// its side.
func (s *IO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = read(fd, p)
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case errno != 0:
		return 0, s.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p as net.Conn's Write does, waiting for room in the
// send buffer and honouring the write deadline.
func (s *IO) Write(p []byte) (int, error) { return s.write(p, true) }

// TryWrite writes what the socket's send buffer has room for and never
// waits: n may be short of len(p) with a nil error. It honours neither
// deadline, since it never blocks.
func (s *IO) TryWrite(p []byte) (int, error) { return s.write(p, false) }

// write writes p until it is all written or, unless wait, the send buffer
// is full.
func (s *IO) write(p []byte, wait bool) (int, error) {
	n := 0
	var errno syscall.Errno
	err := s.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, e := write(fd, p[n:])
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return !wait // full: wait for room, or leave the rest to the caller
			case e != 0:
				errno = e
				return true
			case m <= 0:
				errno = syscall.EIO // a socket never takes nothing without an error
				return true
			}
			n += m
		}
		return true
	})
	switch {
	case err != nil:
		return n, s.opError("write", err)
	case errno != 0:
		return n, s.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError words err as the net package does for op on this socket. The
// RawConn's own errors come wrapped for a "raw-read" or "raw-write": they
// are unwrapped first, so that a deadline or a closed socket reads exactly
// as from net.Conn (errors.Is(err, os.ErrDeadlineExceeded), net.ErrClosed).
func (s *IO) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: s.netw, Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: err}
}

// WriteBuffers writes all of bufs, in order, as one writev where the
// system has it raw (Linux), waiting for room in the send buffer and
// honouring the write deadline; elsewhere one Write per buffer. It
// consumes bufs as net.Buffers.WriteTo does.
func (s *IO) WriteBuffers(bufs *net.Buffers) (int64, error) {
	if !rawWritev {
		var n int64
		for _, b := range *bufs {
			m, err := s.Write(b)
			n += int64(m)
			if err != nil {
				return n, err
			}
		}
		*bufs = nil
		return n, nil
	}
	return s.writevRaw(bufs)
}

// consume drops the first n bytes of bufs.
func consume(bufs *net.Buffers, n int) {
	for len(*bufs) > 0 && n >= len((*bufs)[0]) {
		n -= len((*bufs)[0])
		(*bufs)[0] = nil
		*bufs = (*bufs)[1:]
	}
	if n > 0 {
		(*bufs)[0] = (*bufs)[0][n:]
	}
}
