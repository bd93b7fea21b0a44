package pagekite

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// Stream errors.
var (
	// ErrStreamReset: the stream was torn down before its end (the kite
	// closed it, overran its buffer, or the tunnel ended).
	ErrStreamReset = errors.New("pagekite: stream reset")
	// ErrWriteClosed: the kite said it can take no more data on this
	// stream (EOF with W), or CloseWrite was called.
	ErrWriteClosed = errors.New("pagekite: stream closed for writing")
)

// maxPayload bounds the data of one chunk we send. The kite reads its
// tunnel in pieces of about 50 KB; 16 KiB chunks keep one stream from
// holding the tunnel for long, so streams interleave fairly.
const maxPayload = 16 << 10

// pooledBuf is the capacity of the stream buffers that bufPool recycles.
const pooledBuf = 64 << 10

// bufPool recycles the buffers of drained streams. A download through a
// kite arrives in chunks of about 16 KB, each of which the relay reads
// out at once: without the pool every chunk allocated a buffer for the
// garbage collector (a fifth of the cloud's CPU in the benchmark's
// profile). A drained stream gives its buffer back, so an idle one holds
// none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, pooledBuf); return &b }}

// stream is one connection through a kite: a hub.Stream. Data from the
// kite is appended to buf by the session's reader, which never blocks on a
// stream: the kite's SKB flow control keeps buf small, and a kite that
// overruns the limit gets the stream reset. Read reports consumption back
// as SKB, which is what lets the kite read more from its backend.
type stream struct {
	s     *session
	k     *kite
	sid   int
	local net.Addr
	peer  net.Addr

	mu       sync.Mutex
	cond     chan struct{} // closed and replaced when state changes
	buf      []byte        // data from the kite: buf[off:] is not read yet
	off      int
	readEOF  bool  // the kite will send no more (EOF with R)
	writeEOF bool  // we may send no more (kite's W, or our CloseWrite)
	closed   bool  // Close called or tunnel gone
	err      error // reset reason, when not a clean end
	consumed int64 // bytes handed to Read
	reported int64 // KiB last reported as SKB
	sent     int64 // bytes sent to the kite
	acked    int64 // kite's SKB, in KiB; -1 until the first report

	rdl, wdl deadline
}

func newStream(s *session, k *kite, sid int, local, peer net.Addr) *stream {
	return &stream{s: s, k: k, sid: sid, local: local, peer: peer, cond: make(chan struct{}), acked: -1}
}

// wake tells waiters the state changed; call with mu held.
func (st *stream) wake() {
	close(st.cond)
	st.cond = make(chan struct{})
}

// deliver is called by the session's reader with data from the kite. It
// reports false when the stream had to be reset for overrunning its buffer.
func (st *stream) deliver(p []byte, limit int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.readEOF {
		return true // late data for a stream we are done reading: dropped
	}
	if len(st.buf)-st.off+len(p) > limit {
		st.resetLocked(ErrStreamReset)
		return false
	}
	switch {
	case st.buf == nil && len(p) <= pooledBuf:
		st.buf = (*bufPool.Get().(*[]byte))[:0]
	case st.off > 0 && len(st.buf)+len(p) > cap(st.buf):
		// Move the unread data to the front rather than grow.
		st.buf = st.buf[:copy(st.buf, st.buf[st.off:])]
		st.off = 0
	}
	st.buf = append(st.buf, p...)
	peak := &st.s.srv.stats.PeakStreamBuffer
	for n := int64(len(st.buf) - st.off); n > peak.Load(); {
		if peak.CompareAndSwap(peak.Load(), n) {
			break
		}
	}
	st.wake()
	return true
}

// kiteEOF applies an EOF header from the kite: R ends our reading, W ends
// our writing. An EOF with neither letter means both, as in the original.
func (st *stream) kiteEOF(v string) {
	r, w := containsByte(v, 'R'), containsByte(v, 'W')
	if !r && !w {
		r, w = true, true
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if r {
		st.readEOF = true
	}
	if w {
		st.writeEOF = true
	}
	st.wake()
}

func containsByte(s string, b byte) bool {
	for i := range len(s) {
		if s[i] == b {
			return true
		}
	}
	return false
}

// progress applies the kite's SKB report for this stream.
func (st *stream) progress(skb int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if skb > st.acked {
		st.acked = skb
		st.wake()
	}
}

// reset ends the stream with err, waking Read and Write.
func (st *stream) reset(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.resetLocked(err)
}

func (st *stream) resetLocked(err error) {
	if st.err == nil && !st.closed {
		st.err = err
	}
	st.closed = true
	st.releaseBuf()
	st.wake()
}

// releaseBuf drops the buffer, giving it back to bufPool when it is one
// of the pool's; call with mu held, when nothing in it is needed.
func (st *stream) releaseBuf() {
	if cap(st.buf) == pooledBuf {
		b := st.buf[:0]
		bufPool.Put(&b)
	}
	st.buf, st.off = nil, 0
}

func (st *stream) Read(p []byte) (int, error) {
	for {
		st.mu.Lock()
		if st.off < len(st.buf) {
			n := copy(p, st.buf[st.off:])
			st.off += n
			drained := st.off == len(st.buf)
			if drained {
				st.releaseBuf()
			}
			st.consumed += int64(n)
			// Report progress every 16 KiB or when drained: often enough
			// that the kite, which stops at ~48 KB unacknowledged, keeps
			// streaming, and rarely enough to cost little.
			kb := st.consumed >> 10
			report := kb != st.reported && (drained || kb-st.reported >= 16)
			if report {
				st.reported = kb
			}
			st.mu.Unlock()
			if report {
				st.s.queueProgress(st)
			}
			return n, nil
		}
		if st.err != nil {
			err := st.err
			st.mu.Unlock()
			return 0, err
		}
		if st.readEOF {
			st.mu.Unlock()
			return 0, io.EOF
		}
		if st.closed {
			st.mu.Unlock()
			return 0, net.ErrClosed
		}
		wait := st.cond
		st.mu.Unlock()
		select {
		case <-wait:
		case <-st.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (st *stream) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		n := min(len(p), maxPayload)
		if err := st.waitWindow(); err != nil {
			return total, err
		}
		headers := []Field{{"SID", strconv.Itoa(st.sid)}}
		frame := AppendChunk(make([]byte, 0, n+64), headers, p[:n])
		if err := st.s.sendData(frame, st.wdl.wait()); err != nil {
			return total, err
		}
		st.mu.Lock()
		st.sent += int64(n)
		st.mu.Unlock()
		total += n
		p = p[n:]
	}
	return total, nil
}

// waitWindow blocks while the kite has more than sendWindow bytes of ours
// it has not written to its backend. Until its first SKB the window is not
// enforced, as in the original frontend: a kite that never reports still
// works, bounded by the tunnel's own TCP window.
func (st *stream) waitWindow() error {
	for {
		st.mu.Lock()
		switch {
		case st.err != nil:
			err := st.err
			st.mu.Unlock()
			return err
		case st.closed:
			st.mu.Unlock()
			return net.ErrClosed
		case st.writeEOF:
			st.mu.Unlock()
			return ErrWriteClosed
		case st.acked < 0 || st.sent-st.acked<<10 < int64(st.s.srv.limits.SendWindow):
			st.mu.Unlock()
			return nil
		}
		wait := st.cond
		st.mu.Unlock()
		select {
		case <-wait:
		case <-st.wdl.wait():
			return os.ErrDeadlineExceeded
		}
	}
}

// CloseWrite tells the kite we will send no more: "EOF: 1R" in PageKite's
// terms (our reading side has ended), which makes the kite shut down the
// write side of its backend connection and keep reading from it.
func (st *stream) CloseWrite() error {
	st.mu.Lock()
	if st.closed || st.err != nil {
		st.mu.Unlock()
		return net.ErrClosed
	}
	already := st.writeEOF
	st.writeEOF = true
	st.wake()
	st.mu.Unlock()
	if already {
		return nil
	}
	return st.s.queueEOF(st.sid, "1R")
}

// Close ends the stream both ways ("EOF: 1WR") and forgets it.
func (st *stream) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	st.releaseBuf()
	st.wake()
	st.mu.Unlock()
	st.s.forget(st)
	_ = st.s.queueEOF(st.sid, "1WR")
	return nil
}

func (st *stream) LocalAddr() net.Addr  { return st.local }
func (st *stream) RemoteAddr() net.Addr { return st.peer }

func (st *stream) SetDeadline(t time.Time) error {
	st.rdl.set(t)
	st.wdl.set(t)
	return nil
}
func (st *stream) SetReadDeadline(t time.Time) error  { st.rdl.set(t); return nil }
func (st *stream) SetWriteDeadline(t time.Time) error { st.wdl.set(t); return nil }

// deadline turns a net.Conn deadline into a channel closed when it passes.
// gen discards a timer that fires after it was replaced.
type deadline struct {
	mu    sync.Mutex
	t     *time.Timer
	ch    chan struct{}
	fired bool
	gen   uint64
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.t != nil {
		d.t.Stop()
		d.t = nil
	}
	if d.ch == nil || d.fired {
		d.ch = make(chan struct{})
		d.fired = false
	}
	if t.IsZero() {
		return
	}
	gen := d.gen
	if dur := time.Until(t); dur <= 0 {
		d.fired = true
		close(d.ch)
		return
	}
	d.t = time.AfterFunc(time.Until(t), func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen && !d.fired {
			d.fired = true
			close(d.ch)
		}
	})
}

// wait returns a channel closed once the deadline has passed; nil (never
// ready) when none was ever set.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

var errDeadline = os.ErrDeadlineExceeded
