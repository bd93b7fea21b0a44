package proxy

import (
	"net"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// fullRecord is the size from which a write under the TLS server is taken
// for a full TLS record (16 KiB of plaintext plus its header and tag): one
// of a bulk write's records, with more to follow.
const fullRecord = 16 << 10

// recordFlushDelay bounds how long full records wait for more: a body
// written in a multiple of 16 KiB ends with a full record, and nothing tells
// the conn that no more follows.
const recordFlushDelay = 200 * time.Microsecond

var recordBufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, tunnel.MaxDataSize)
	return &b
}}

// recordConn sits under the TLS server of a tunnel stream and merges the
// TLS records of a bulk response into large Data frames. crypto/tls writes
// each record (16 KiB at most) on its own, which made the terminating path
// send one Data frame, one tunnel TLS record and a system call on each side
// per 16 KiB. Full records collect in a buffer until the next would not fit
// in a Data frame, a smaller record (the end of a write) comes, or
// recordFlushDelay passes; a small record that finds nothing buffered (a
// handshake message, a small response) goes out at once, so requests and
// responses pay no delay.
type recordConn struct {
	net.Conn

	mu    sync.Mutex
	buf   *[]byte // nil when empty
	timer *time.Timer
	err   error // of a flush the timer did
}

func newRecordConn(c net.Conn) *recordConn { return &recordConn{Conn: c} }

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.buf != nil && len(*c.buf)+len(p) > tunnel.MaxDataSize {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) < fullRecord || len(p) > tunnel.MaxDataSize {
		if c.buf == nil {
			return c.Conn.Write(p)
		}
		*c.buf = append(*c.buf, p...)
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if c.buf == nil {
		c.buf = recordBufPool.Get().(*[]byte)
		if c.timer == nil {
			c.timer = time.AfterFunc(recordFlushDelay, c.flushLater)
		} else {
			c.timer.Reset(recordFlushDelay)
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

func (c *recordConn) flushLater() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf != nil && c.err == nil {
		c.err = c.flushLocked()
	}
}

// flushLocked writes what is buffered; c.mu held.
func (c *recordConn) flushLocked() error {
	if c.buf == nil {
		return nil
	}
	b := c.buf
	c.buf = nil
	if c.timer != nil {
		c.timer.Stop()
	}
	_, err := c.Conn.Write(*b)
	*b = (*b)[:0]
	recordBufPool.Put(b)
	return err
}

// Close sends what is buffered first: a response's last records must not
// be lost behind its close_notify's close.
func (c *recordConn) Close() error {
	c.mu.Lock()
	if c.err == nil {
		_ = c.flushLocked()
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite flushes, then half-closes the stream.
func (c *recordConn) CloseWrite() error {
	c.mu.Lock()
	err := c.flushLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
