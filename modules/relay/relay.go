// Package relay copies bytes both ways between two connections: a client
// and a tunnel stream in the cloud's SNI frontend, two tunnel streams in the
// cloud's forwarding relay, a stream and a local service in the gateway
// agent. It passes the end of each direction on as a half-close, and holds
// little memory while both sides are quiet.
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// Buffer sizes of Copy. A copy starts each read with a small buffer of its
// own, and takes a large pooled one only while reads keep filling the
// buffer (a bulk transfer). So an idle relay, which waits in Read, holds
// 2×SmallBuffer rather than two frames' worth: what makes 10,000 idle
// streams cheap. The large buffer is one full Data frame, so that a bulk
// read toward a stream leaves as whole frames.
const (
	SmallBuffer = 2 << 10
	LargeBuffer = tunnel.MaxDataSize
)

var largePool = sync.Pool{New: func() any {
	b := make([]byte, LargeBuffer)
	return &b
}}

// Copy copies src to dst until src ends, calling count (when not nil) with
// each chunk written, so that metrics move during a long transfer. It
// returns the bytes written, and nil at src's EOF, else the read or write
// error.
func Copy(dst io.Writer, src io.Reader, count func(int)) (int64, error) {
	if st, ok := src.(*tunnel.Stream); ok {
		return copyStream(dst, st, count)
	}
	toStream, _ := dst.(*tunnel.Stream)
	src = rawReader(src)
	small := make([]byte, SmallBuffer)
	large := false
	var total int64
	for {
		if large && toStream != nil {
			// A bulk transfer toward a stream: read straight into a Data
			// frame (Stream.WriteFrom).
			n, rerr, werr := toStream.WriteFrom(src)
			total += int64(n)
			if count != nil && n > 0 {
				count(n)
			}
			switch {
			case werr != nil:
				return total, werr
			case errors.Is(rerr, io.EOF):
				return total, nil
			case rerr != nil:
				return total, rerr
			}
			large = n >= SmallBuffer
			continue
		}
		buf := small
		var pooled *[]byte
		if large {
			pooled = largePool.Get().(*[]byte)
			buf = *pooled
		}
		n, rerr := src.Read(buf)
		var werr error
		if n > 0 {
			var w int
			w, werr = dst.Write(buf[:n])
			total += int64(w)
			if count != nil {
				count(w)
			}
		}
		if pooled != nil {
			largePool.Put(pooled)
		}
		switch {
		case werr != nil:
			return total, werr
		case errors.Is(rerr, io.EOF):
			return total, nil
		case rerr != nil:
			return total, rerr
		}
		// A full buffer means more is waiting.
		large = n == len(buf)
	}
}

// copyStream is Copy from a tunnel stream: the received frames go from the
// stream's buffers to dst without a copy into one of Copy's (Stream.ReadTo),
// and the copy holds no buffer of its own while it waits. Small data that
// the session's reader writes to dst itself (TryWrite) is counted by the
// tryConn, on the reader's goroutine.
func copyStream(dst io.Writer, src *tunnel.Stream, count func(int)) (int64, error) {
	w := &errWriter{w: dst}
	tw := withTry(w, count)
	var total int64
	for {
		n, err := src.ReadTo(tw)
		total += int64(n)
		if count != nil && n > 0 {
			count(n)
		}
		switch {
		case w.err != nil:
			return total + tried(tw), w.err
		case errors.Is(err, io.EOF):
			return total + tried(tw), nil
		case err != nil:
			return total + tried(tw), err
		}
	}
}

// tried is what w wrote with TryWrite, when it is a tryConn. ReadTo has
// returned, so no TryWrite runs any more (they run while it waits, and it
// synchronizes with them before returning).
func tried(w io.Writer) int64 {
	if t, ok := w.(interface{ tried() int64 }); ok {
		return t.tried()
	}
	return 0
}

// errWriter remembers the error of its writes, which tells a failed write
// from a failed read in what Stream.ReadTo returns.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// Counts receives each direction's bytes as they are written; nil fields
// are skipped.
type Counts struct {
	AToB, BToA func(int)
}

// Result is what each direction of Conns copied, and why it ended (nil for
// a clean end: EOF passed on as a half-close).
type Result struct {
	AToB, BToA       int64
	AToBErr, BToAErr error
}

// Conns copies between a and b both ways until both directions have ended.
// The end of one direction (EOF) is passed on as a half-close, so that
// protocols that finish sending before they stop reading (TLS close_notify,
// ssh's exit status, HTTP/1.0 bodies) work; a connection that cannot
// half-close is closed instead. An error in either direction, or ctx
// ending, closes both connections, since the other direction would
// otherwise wait for a peer that is gone. The caller still closes a and b
// afterwards.
func Conns(ctx context.Context, a, b net.Conn, counts Counts) Result {
	stop := context.AfterFunc(ctx, func() { _ = a.Close(); _ = b.Close() })
	defer stop()
	var res Result
	var wg sync.WaitGroup
	wg.Go(func() { res.AToB, res.AToBErr = half(b, a, counts.AToB) })
	res.BToA, res.BToAErr = half(a, b, counts.BToA)
	wg.Wait()
	return res
}

// half copies src to dst, then half-closes dst; on an error it closes both.
func half(dst, src net.Conn, count func(int)) (int64, error) {
	n, err := Copy(dst, src, count)
	if err == nil {
		err = closeWrite(dst)
	}
	if err != nil {
		_ = dst.Close()
		_ = src.Close()
	}
	return n, err
}

// closeWrite half-closes c, or closes it when it cannot (the peer must
// learn that no more data comes, even at the cost of the other direction).
func closeWrite(c net.Conn) error {
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return c.Close()
	}
	err := hc.CloseWrite()
	if errors.Is(err, errors.ErrUnsupported) {
		return c.Close()
	}
	return err
}
