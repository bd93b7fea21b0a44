package tunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// errDeadline is what Read and Write return once a deadline has passed; it
// is a net.Error whose Timeout() is true, as net.Conn requires.
var errDeadline error = os.ErrDeadlineExceeded

// Stream is one multiplexed byte stream: a net.Conn (deadlines included)
// with half-close, and the Initiator that opened it.
//
// Data the peer sends is buffered up to this side's window until Read
// consumes it; Write blocks while the peer's window is exhausted, so a slow
// reader holds back only its own stream.
type Stream struct {
	sess   *Session
	id     GUID
	init   Initiator
	opener bool // this side opened the stream

	ackCh chan Ack // the peer's answer to Open; opener only

	readable chan struct{} // signalled when data, EOF or an error arrives
	// delivered is signalled when the session's reader copied data into
	// the buffer of the Read waiting for it (see wantBuf).
	delivered chan struct{}
	writable  chan struct{} // signalled when credit arrives or writes must fail
	done      chan struct{} // closed by Close
	wsem      chan struct{} // write lock: orders Ack, Data and Terminator (see lockWrite)

	rd, wd deadline

	mu         sync.Mutex
	state      streamState // changed only through transition (state.go)
	sessErr    error       // why the session ended, once it has
	buf        recvBuffer
	window     int64 // this side's receive window
	recvAvail  int64 // bytes the peer may still send
	unacked    int64 // bytes read but not yet granted back to the peer
	drained    bool  // a read emptied the buffer since the last grant
	sendCredit int64 // bytes this side may still send
	// wantBuf is the buffer of a Read waiting with nothing buffered, and
	// wantN how much of it the session's reader filled: data that finds a
	// reader waiting goes straight into its buffer, one copy instead of
	// two (into buf, then out of it). Only one Read registers at a time.
	wantBuf []byte
	wantN   int
	// try is the TryWriter of a ReadTo waiting with nothing buffered, and
	// tryErr the error of a TryWrite of the session's reader: small data
	// that finds it waiting goes to the destination from the reader, and
	// the ReadTo's goroutine is not woken for it.
	try    TryWriter
	tryErr error
	early  int64 // bytes sent or received before the Ack (VersionEarlyData)
}

func newStream(s *Session, init Initiator, opener bool) *Stream {
	st := &Stream{
		sess:      s,
		id:        init.GUID,
		init:      init,
		opener:    opener,
		readable:  make(chan struct{}, 1),
		delivered: make(chan struct{}, 1),
		writable:  make(chan struct{}, 1),
		done:      make(chan struct{}),
		wsem:      make(chan struct{}, 1),
		window:    int64(s.cfg.StreamWindow),
	}
	st.recvAvail = st.window
	if opener {
		st.state = stateOpening
		st.ackCh = make(chan Ack, 1)
	} else {
		st.state = stateAccepted
		st.sendCredit = windowOrDefault(init.Window)
	}
	return st
}

// grow doubles the receive window, up to the configured maximum, when the
// reader emptied the buffer since the last grant: the reader caught up with
// what arrived, so the sender was waiting for credit, not for the reader,
// and a larger window buys throughput. A reader that falls behind never
// empties the buffer and never grows its window. It returns the extra
// credit to grant. Called with st.mu held.
func (st *Stream) grow() int64 {
	drained := st.drained
	st.drained = false
	limit := int64(st.sess.cfg.MaxStreamWindow)
	if !drained || st.window >= limit {
		return 0
	}
	inc := min(st.window, limit-st.window)
	st.window += inc
	return inc
}

func windowOrDefault(w uint32) int64 {
	if w == 0 {
		return DefaultWindow
	}
	return int64(w)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// GUID is the stream's identifier on the wire.
func (st *Stream) GUID() GUID { return st.id }

// Initiator returns the metadata the stream was opened with: destination
// Ip/Port, Gatename and the original client's address.
func (st *Stream) Initiator() Initiator { return st.init }

// Ack answers an accepted stream: ok true lets the peer's Open return and
// data flow; false refuses it, and message reaches the peer's Open as the
// RefusedError reason. Only streams from Accept are answered, once.
func (st *Stream) Ack(ok bool, message string) error {
	if len(message) > MaxReasonLen {
		message = message[:MaxReasonLen]
	}
	ev := evAccept
	if !ok {
		ev = evRefuse
	}
	// Checked before the write lock too, so that a refused or closed
	// stream answers at once.
	st.mu.Lock()
	_, err := transition(st.state, ev)
	if err == nil {
		err = st.sessErr
	}
	st.mu.Unlock()
	if err != nil {
		return err
	}

	if !ok {
		st.mu.Lock()
		_, err := transition(st.state, evRefuse)
		if err == nil {
			st.closeLocked() // the state becomes closed
		}
		st.mu.Unlock()
		if err != nil {
			return err
		}
		st.released()
		return st.sess.queueCtrl(Ack{Ok: false, Message: message, GUID: st.id})
	}
	b, err := Encode(Ack{Ok: true, Message: message, GUID: st.id, Window: st.sess.cfg.StreamWindow})
	if err != nil {
		return err
	}
	// The peer must see the Ack before any of our data: the stream opens
	// under the write lock, so no Write from another goroutine slips in
	// between.
	if err := st.lockWrite(st.done, nil); err != nil {
		return err
	}
	defer st.unlockWrite()
	st.mu.Lock()
	next, err := transition(st.state, evAccept)
	st.state = next
	st.mu.Unlock()
	if err != nil {
		return err
	}
	return st.sess.enqueue(context.Background(), outFrame{b: b}, st.done, nil)
}

// Early takes the bytes that came with the stream before it was answered
// (the peer's OpenEarly: a visitor's ClientHello) off the stream and
// returns them, nil when there are none; only a stream not answered yet
// has any. A handler that connects to an upstream writes them there before
// its Ack, so that the upstream starts its work (a TLS server its
// handshake) while the Ack is being sent and read: the Ack's write, and
// the wakeup of the peer it causes, leave the connection's critical path.
// Bytes that arrive after Early are read as usual, after them.
func (st *Stream) Early() []byte {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.state != stateAccepted || st.buf.len() == 0 {
		return nil
	}
	p := make([]byte, st.buf.len())
	n := st.buf.read(p)
	// Consumed like read bytes: granted back with later reads.
	st.consumed(n, false)
	return p[:n]
}

// Read reads data the peer sent. It returns io.EOF after the peer's
// CloseWrite or Close once the buffered data is consumed.
func (st *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		st.mu.Lock()
		if st.buf.len() > 0 {
			n := st.buf.read(p)
			more := st.buf.len() > 0
			grant := st.consumed(n, more)
			st.mu.Unlock()
			if more {
				// Another reader may be waiting.
				signal(st.readable)
			}
			st.sendGrant(grant)
			return n, nil
		}
		if err := st.readErr(); err != nil {
			st.mu.Unlock()
			return 0, err
		}
		registered := st.wantBuf == nil
		if registered {
			st.wantBuf, st.wantN = p, 0
		}
		st.mu.Unlock()
		werr := st.waitReadable()
		if registered {
			st.mu.Lock()
			n := st.wantN
			st.wantBuf, st.wantN = nil, 0
			if n > 0 {
				// Delivered data comes before anything buffered since.
				grant := st.consumed(n, st.buf.len() > 0)
				st.mu.Unlock()
				st.sendGrant(grant)
				return n, nil
			}
			if st.buf.len() > 0 {
				// Buffered while this Read was registered: another reader
				// may wait for it too.
				signal(st.readable)
			}
			st.mu.Unlock()
		}
		if werr != nil {
			return 0, werr
		}
	}
}

// TryWriter is a writer that can also write without ever blocking:
// TryWrite writes what the destination takes at once (maybe nothing) and
// returns how much that was. The bytes TryWrite takes while ReadTo waits
// are not among those ReadTo returns: the TryWriter counts them itself.
type TryWriter interface {
	io.Writer
	TryWrite(p []byte) (int, error)
}

// ReadTo waits for data as Read does, then writes what is buffered at the
// head of the stream (one received frame, or a run of smaller Data) to w
// without copying it into a buffer of the caller's. It returns the bytes
// written; a write error is returned as it is. A relay toward a client
// connection uses it, so that a frame's payload goes from the buffer the
// transport read it into straight to the client's socket. It must not run
// concurrently with Read or another ReadTo.
//
// When w is a TryWriter, small Data (up to directWriteMax) that arrives
// while ReadTo waits is written by the session's reader with TryWrite, and
// ReadTo goes on waiting: a request or response crosses without waking
// ReadTo's goroutine at all (a wakeup is a scheduling hop, and on a busy
// machine often a thread woken to spin for nothing). Those bytes are the
// TryWriter's to count; ReadTo returns only what it writes with Write, or
// a TryWrite's error. What TryWrite does not take is buffered and written
// by ReadTo as usual; TryWrite never blocks, so a slow destination holds up
// only its own stream.
func (st *Stream) ReadTo(w io.Writer) (int, error) {
	for {
		st.mu.Lock()
		if st.buf.len() > 0 {
			if bw, ok := w.(BuffersWriter); ok && len(st.buf.segs) > 1 {
				return st.readToBuffers(bw)
			}
			seg := st.buf.take()
			more := st.buf.len() > 0
			st.mu.Unlock()
			n, err := w.Write(seg.data)
			// The bytes left the buffer whatever the write did: the
			// window accounting counts them all.
			st.mu.Lock()
			grant := st.consumed(len(seg.data), st.buf.len() > 0)
			st.mu.Unlock()
			seg.release()
			if more {
				signal(st.readable)
			}
			st.sendGrant(grant)
			return n, err
		}
		if err := st.readErr(); err != nil {
			st.mu.Unlock()
			return 0, err
		}
		tw, registered := w.(TryWriter)
		if registered {
			st.try, st.tryErr = tw, nil
		}
		st.mu.Unlock()
		werr := st.waitReadable()
		if registered {
			st.mu.Lock()
			err := st.tryErr
			st.try, st.tryErr = nil, nil
			st.mu.Unlock()
			if err != nil {
				return 0, err
			}
		}
		if werr != nil {
			return 0, werr
		}
	}
}

// BuffersWriter is a writer that can also write several buffers in one
// call, as a socket's writev does (net.Buffers). ReadTo uses it to pass on
// the frames a bulk transfer has buffered in one system call instead of one
// per frame.
type BuffersWriter interface {
	io.Writer
	WriteBuffers(v [][]byte) (int64, error)
}

// Bounds of what one WriteBuffers call takes: enough for a few frames, so
// that a client slower than the tunnel costs a system call per quarter MiB
// rather than per frame, and few enough that the stream's window goes back
// to the peer in steps.
const (
	maxWriteBuffers      = 16
	maxWriteBuffersBytes = 4 * MaxFrameSize
)

// writev is the scratch of a readToBuffers call, pooled so that an idle
// stream holds none.
type writev struct {
	segs []segment
	v    [][]byte
}

var writevPool = sync.Pool{New: func() any {
	return &writev{segs: make([]segment, 0, maxWriteBuffers), v: make([][]byte, 0, maxWriteBuffers)}
}}

// readToBuffers is ReadTo's write of several buffered segments at once;
// called with st.mu held, which it releases.
func (st *Stream) readToBuffers(w BuffersWriter) (int, error) {
	wv := writevPool.Get().(*writev)
	total := 0
	for st.buf.len() > 0 && len(wv.segs) < maxWriteBuffers && total < maxWriteBuffersBytes {
		seg := st.buf.take()
		wv.segs = append(wv.segs, seg)
		wv.v = append(wv.v, seg.data)
		total += len(seg.data)
	}
	more := st.buf.len() > 0
	st.mu.Unlock()
	n, err := w.WriteBuffers(wv.v)
	// As in ReadTo: the bytes left the buffer whatever the write did.
	st.mu.Lock()
	grant := st.consumed(total, st.buf.len() > 0)
	st.mu.Unlock()
	for i, seg := range wv.segs {
		seg.release()
		wv.segs[i] = segment{}
		wv.v[i] = nil
	}
	wv.segs, wv.v = wv.segs[:0], wv.v[:0]
	writevPool.Put(wv)
	if more {
		signal(st.readable)
	}
	st.sendGrant(grant)
	return int(n), err
}

// consumed accounts for n bytes read, more saying whether bytes are still
// buffered, and returns the credit to grant the peer (0 for none yet).
// Called with st.mu held.
func (st *Stream) consumed(n int, more bool) int64 {
	st.unacked += int64(n)
	st.drained = st.drained || !more
	// Grant the consumed bytes back once half the window is consumed:
	// fewer Window frames than per-read updates, and the peer never runs
	// dry while the other half is in flight.
	if st.unacked < st.window/2 || (st.state != stateOpen && st.state != stateLocalFin) {
		return 0
	}
	grant := st.unacked + st.grow()
	st.recvAvail += grant
	st.unacked = 0
	return grant
}

func (st *Stream) sendGrant(grant int64) {
	if grant > 0 {
		_ = st.sess.queueCtrl(Window{GUID: st.id, Credit: uint32(grant)})
	}
}

// waitReadable waits, st.mu not held, until a reader has something to
// look at again: data buffered or delivered, the stream's or session's
// end, or the read deadline (errDeadline).
func (st *Stream) waitReadable() error {
	select {
	case <-st.readable:
	case <-st.delivered:
	case <-st.rd.wait():
		return errDeadline
	case <-st.done:
	case <-st.sess.done:
	}
	return nil
}

// readErr says why a Read (or ReadTo) with nothing buffered must not
// wait: the stream's end, or its read deadline passed; st.mu held.
func (st *Stream) readErr() error {
	if err := st.endErr(); err != nil {
		return err
	}
	if st.rd.passed() {
		return errDeadline
	}
	return nil
}

// endErr is readErr without the deadline.
func (st *Stream) endErr() error {
	switch st.state {
	case stateClosed:
		return ErrStreamClosed
	case stateRemoteFin, stateFinished, stateReset:
		return io.EOF
	}
	if st.sessErr != nil {
		return st.sessErr
	}
	if !st.state.established() {
		return ErrNotAcked
	}
	return nil
}

// writeErr says why a Write must fail; st.mu held.
func (st *Stream) writeErr() error {
	if st.state == stateClosed {
		return ErrStreamClosed
	}
	if st.sessErr != nil {
		return st.sessErr
	}
	switch st.state {
	case stateReset:
		return ErrStreamReset
	case stateLocalFin, stateFinished:
		return fmt.Errorf("%w: write after CloseWrite", ErrStreamClosed)
	case stateOpening, stateAccepted:
		return ErrNotAcked
	}
	return nil
}

// Write sends p, split into Data frames of at most MaxDataSize bytes, each
// waiting for send credit. It returns once every frame is queued for the
// session writer or written (p is copied), so the data goes out even if
// Close follows.
func (st *Stream) Write(p []byte) (int, error) {
	if err := st.lockWrite(st.done, st.wd.wait()); err != nil {
		return 0, err
	}
	defer st.unlockWrite()
	n := 0
	for len(p) > 0 {
		size, err := st.takeCredit(len(p))
		if err != nil {
			return n, err
		}
		f := dataFrame(st.id, p[:size])
		if err := st.sess.enqueue(context.Background(), f, st.done, st.wd.wait()); err != nil {
			framePool.Put(f.pooled)
			st.mu.Lock()
			st.sendCredit += int64(size)
			st.mu.Unlock()
			return n, st.failure(err)
		}
		n += size
		p = p[size:]
	}
	return n, nil
}

// dataHeader16 is a payload of bin16 size, whose Data frame's header
// WriteFrom copies.
var dataHeader16 = make([]byte, 0x100)

// WriteFrom reads once from r straight into a Data frame, as much as the
// send credit allows (up to MaxDataSize), and queues the frame: one copy of
// the bytes fewer than a Read into a buffer followed by Write. It returns
// the bytes sent, the read's error and the write's (a failed Write's). It
// holds a frame buffer while r's Read blocks: a relay calls it in a bulk
// transfer, not on an idle connection.
func (st *Stream) WriteFrom(r io.Reader) (n int, readErr, writeErr error) {
	size, err := st.takeCredit(MaxDataSize)
	if err != nil {
		return 0, nil, err
	}
	bp := framePool.Get().(*[]byte)
	// The header of a Data frame with a bin16 payload, then the payload
	// read in place.
	b := AppendData((*bp)[:frameHeadroom], st.id, dataHeader16)[:frameHeadroom+dataBinOff+3]
	n, readErr = r.Read(b[len(b) : len(b)+size])
	if n < size {
		st.mu.Lock()
		st.sendCredit += int64(size - n)
		st.mu.Unlock()
		signal(st.writable)
	}
	if n == 0 {
		framePool.Put(bp)
		return 0, readErr, nil
	}
	b = b[:len(b)+n]
	f := b[frameHeadroom:]
	if n <= 0xff {
		// The canonical bin8 form, as AppendData writes it.
		f[dataBinOff], f[dataBinOff+1] = mpBin8, byte(n)
		copy(f[dataBinOff+2:], f[dataBinOff+3:])
		f = f[:len(f)-1]
	} else {
		f[dataBinOff+1], f[dataBinOff+2] = byte(n>>8), byte(n)
	}
	*bp = (*bp)[:frameHeadroom+len(f)]
	if err := st.lockWrite(st.done, st.wd.wait()); err != nil {
		framePool.Put(bp)
		return 0, readErr, err
	}
	defer st.unlockWrite()
	// Checked under the write lock: no Data after the Terminator.
	st.mu.Lock()
	err = st.writeErr()
	st.mu.Unlock()
	if err == nil {
		err = st.sess.enqueue(context.Background(), outFrame{b: f, pooled: bp}, st.done, st.wd.wait())
		if err != nil {
			err = st.failure(err)
		}
	}
	if err != nil {
		framePool.Put(bp)
		return 0, readErr, err
	}
	return n, readErr, nil
}

// dataFrame encodes a Data frame into a pooled buffer, frameHeadroom bytes
// in (see headroomWriter).
func dataFrame(g GUID, p []byte) outFrame {
	bp := framePool.Get().(*[]byte)
	*bp = AppendData((*bp)[:frameHeadroom], g, p)
	return outFrame{b: (*bp)[frameHeadroom:], pooled: bp}
}

// failure replaces a generic wait error with the stream's own reason.
func (st *Stream) failure(err error) error {
	if err == errDeadline {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if e := st.writeErr(); e != nil {
		return e
	}
	return err
}

// lockWrite takes the write lock. Every frame that must stay in order
// behind the stream's Data (Ack, Data, Terminator) is queued under it, so
// that a Close racing a Write cannot put Data behind the Terminator, which
// the peer would take as a protocol violation. stop and expired abort the
// wait (nil: only the session's end does).
func (st *Stream) lockWrite(stop, expired <-chan struct{}) error {
	select {
	case st.wsem <- struct{}{}:
		return nil
	default:
	}
	select {
	case st.wsem <- struct{}{}:
		return nil
	case <-expired:
		return errDeadline
	case <-stop:
		return ErrStreamClosed
	case <-st.sess.done:
		return st.sess.err
	}
}

func (st *Stream) unlockWrite() { <-st.wsem }

// takeCredit waits for send credit and takes up to want bytes of it.
func (st *Stream) takeCredit(want int) (int, error) {
	for {
		if st.wd.passed() {
			return 0, errDeadline
		}
		st.mu.Lock()
		if err := st.writeErr(); err != nil {
			st.mu.Unlock()
			return 0, err
		}
		if st.sendCredit > 0 {
			n := int(min(int64(want), st.sendCredit, MaxDataSize))
			st.sendCredit -= int64(n)
			st.mu.Unlock()
			return n, nil
		}
		st.mu.Unlock()
		select {
		case <-st.writable:
		case <-st.wd.wait():
			return 0, errDeadline
		case <-st.done:
		case <-st.sess.done:
		}
	}
}

// CloseWrite tells the peer that no more data comes from this side (it reads
// EOF after what was written); reading goes on. It waits for a Write in
// progress so that the Terminator follows all of its data.
func (st *Stream) CloseWrite() error {
	if err := st.lockWrite(st.done, nil); err != nil {
		return err
	}
	defer st.unlockWrite()
	st.mu.Lock()
	prev := st.state
	if prev == stateLocalFin || prev == stateFinished {
		st.mu.Unlock()
		return nil
	}
	if err := st.writeErr(); err != nil {
		st.mu.Unlock()
		return err
	}
	next, err := transition(prev, evCloseWrite)
	st.state = next
	st.mu.Unlock()
	if err != nil {
		return err
	}
	if next.gone() {
		st.sess.remove(st)
	}
	b, err := Encode(Terminator{GUID: st.id, Half: true})
	if err != nil {
		return err
	}
	return st.sess.enqueue(context.Background(), outFrame{b: b}, st.done, nil)
}

// Close ends the stream both ways: the peer reads EOF after the data already
// written and its further writes fail with ErrStreamReset. Blocked Reads and
// Writes return ErrStreamClosed. Close is idempotent.
func (st *Stream) Close() error {
	st.mu.Lock()
	prev := st.state
	if prev == stateClosed {
		st.mu.Unlock()
		return nil
	}
	var msg Message
	switch prev {
	case stateAccepted:
		// Never answered: closing refuses it.
		msg = Ack{Ok: false, Message: ReasonStreamClosed, GUID: st.id}
	case stateOpen, stateLocalFin, stateRemoteFin:
		if st.sessErr == nil {
			msg = Terminator{GUID: st.id}
		}
	}
	st.closeLocked()
	st.mu.Unlock()
	st.released()
	if msg == nil {
		return nil
	}
	if ack, ok := msg.(Ack); ok {
		return st.sess.queueCtrl(ack)
	}
	b, err := Encode(msg)
	if err != nil {
		return err
	}
	// Behind the data this stream queued, including a Write in progress,
	// which returns promptly now that st.done is closed. Only the
	// session's end aborts these waits.
	if err := st.lockWrite(nil, nil); err != nil {
		return nil
	}
	defer st.unlockWrite()
	err = st.sess.enqueue(context.Background(), outFrame{b: b}, nil, nil)
	if err != nil && st.sess.closed() {
		return nil
	}
	return err
}

// closeLocked moves the stream to stateClosed, frees its buffer and wakes
// its waiters; st.mu held, and the state not closed yet. The caller then
// calls released.
func (st *Stream) closeLocked() {
	st.state, _ = transition(st.state, evClose)
	st.buf.free()
	close(st.done)
}

// released stops the deadline timers of a closed stream and forgets it in
// the session; st.mu not held.
func (st *Stream) released() {
	st.rd.stop()
	st.wd.stop()
	st.sess.remove(st)
}

// abandon is an Open that gave up waiting: the peer may still accept the
// stream, so it is told to drop it.
func (st *Stream) abandon() {
	st.mu.Lock()
	if st.state == stateClosed {
		st.mu.Unlock()
		return
	}
	st.closeLocked()
	st.mu.Unlock()
	st.released()
	if b, err := Encode(Terminator{GUID: st.id}); err == nil {
		_ = st.sess.enqueue(context.Background(), outFrame{b: b}, nil, nil)
	}
}

// receive buffers Data from the peer; it runs on the session's reader and
// never blocks. keeper, when not nil, is the transport p was read from: a
// large payload stays in its frame buffer (see keepFrameMin).
func (st *Stream) receive(p []byte, keeper frameKeeper) error {
	st.mu.Lock()
	grant, err := st.receiveLocked(p, keeper)
	st.mu.Unlock()
	// Outside st.mu: a full control queue ends the session, which locks
	// every stream.
	st.sendGrant(grant)
	return err
}

// receiveLocked is receive with st.mu held; it returns the credit to grant
// for bytes the session's reader passed on itself (TryWrite).
func (st *Stream) receiveLocked(p []byte, keeper frameKeeper) (int64, error) {
	switch st.state {
	case stateClosed:
		return 0, nil
	case stateOpening:
		return 0, violation("data on stream %v before its ack", st.id)
	case stateAccepted:
		// Early data (VersionEarlyData): buffered until the application
		// answers, dropped if it refuses.
		if st.early += int64(len(p)); st.early > MaxEarlyData {
			return 0, violation("stream %v: %d bytes of early data, more than %d", st.id, st.early, MaxEarlyData)
		}
	case stateRemoteFin, stateFinished, stateReset:
		return 0, violation("data on stream %v after its terminator", st.id)
	}
	switch {
	case int64(len(p)) > st.recvAvail:
		return 0, violation("stream %v: %d bytes exceed the %d bytes of credit", st.id, len(p), st.recvAvail)
	}
	st.recvAvail -= int64(len(p))
	var grant int64
	if st.try != nil && st.tryErr == nil && st.buf.len() == 0 && len(p) <= directWriteMax {
		n, err := st.try.TryWrite(p)
		p = p[n:]
		if n > 0 {
			// Consumed here: ReadTo never sees these bytes.
			grant = st.consumed(n, len(p) > 0)
		}
		if err != nil {
			st.tryErr = err
			signal(st.delivered)
		}
	}
	if st.wantBuf != nil && st.buf.len() == 0 && st.wantN < len(st.wantBuf) {
		n := copy(st.wantBuf[st.wantN:], p)
		st.wantN += n
		p = p[n:]
		signal(st.delivered)
	}
	if len(p) == 0 {
		return grant, nil
	}
	if len(p) >= keepFrameMin && keeper != nil {
		if f := keeper.keepFrame(); f != nil {
			st.buf.keep(f, p)
			signal(st.readable)
			return grant, nil
		}
	}
	st.buf.write(p)
	signal(st.readable)
	return grant, nil
}

// credit adds the peer's Window grant.
func (st *Stream) credit(n uint32) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sendCredit += int64(n)
	// A receiver grants back what it consumed, so credit never exceeds
	// the largest window; more is a confused or malicious peer.
	if st.sendCredit > MaxWindow {
		return violation("stream %v: credit %d above the largest window", st.id, st.sendCredit)
	}
	signal(st.writable)
	return nil
}

// terminated handles the peer's Terminator.
func (st *Stream) terminated(half bool) {
	ev := evRecvReset
	if half {
		ev = evRecvFin
	}
	st.mu.Lock()
	prev := st.state
	// Terminators are accepted in every state (transition never refuses
	// them).
	st.state, _ = transition(prev, ev)
	if prev == stateOpening {
		// Withdrawn before it answered our Open.
		st.ackCh <- Ack{Ok: false, Message: ReasonStreamClosedByPeer, GUID: st.id}
	}
	done := st.state.gone()
	st.mu.Unlock()
	signal(st.readable)
	signal(st.writable)
	if done {
		st.sess.remove(st)
	}
}

// acked handles the peer's answer to Open.
func (st *Stream) acked(m Ack) error {
	ev := evRefused
	if m.Ok {
		ev = evAcked
	}
	st.mu.Lock()
	next, err := transition(st.state, ev)
	if err != nil {
		st.mu.Unlock()
		return violation("unexpected ack for stream %v in state %v", st.id, st.state)
	}
	st.state = next
	if m.Ok {
		// The early data came out of the window the Ack states.
		st.sendCredit += max(windowOrDefault(m.Window)-st.early, 0)
	}
	st.ackCh <- m
	st.mu.Unlock()
	if !m.Ok {
		st.sess.remove(st)
	}
	return nil
}

// sessionClosed wakes the stream's waiters when the session ends. Buffered
// data stays readable.
func (st *Stream) sessionClosed() {
	st.mu.Lock()
	st.sessErr = st.sess.err
	st.mu.Unlock()
	signal(st.readable)
	signal(st.writable)
}

// SetDeadline sets both the read and the write deadline.
func (st *Stream) SetDeadline(t time.Time) error {
	st.rd.set(t)
	st.wd.set(t)
	return nil
}

// SetReadDeadline makes Reads, pending ones included, fail with a timeout
// after t; the zero time removes the deadline.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.rd.set(t)
	return nil
}

// SetWriteDeadline makes Writes, pending ones included, fail with a timeout
// after t. Data already queued is still sent.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.wd.set(t)
	return nil
}

// Addr is a stream endpoint that has no IP address: the gateway's name, or
// the stream's GUID.
type Addr string

// Network is "tunnel".
func (Addr) Network() string { return "tunnel" }

func (a Addr) String() string { return string(a) }

// clientAddr is the original client (ClientAddr), or the GUID.
func (st *Stream) clientAddr() net.Addr {
	if ap, err := netip.ParseAddrPort(st.init.ClientAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return Addr(st.id.String())
}

// targetAddr is the destination (Ip:Port), or the gateway name.
func (st *Stream) targetAddr() net.Addr {
	if ip, err := netip.ParseAddr(st.init.Ip); err == nil {
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, st.init.Port))
	}
	return Addr(st.init.Gatename)
}

// LocalAddr is, on the side that accepted the stream, its destination
// (Ip:Port, else the Gatename); on the side that opened it, the original
// client's address (else the GUID).
func (st *Stream) LocalAddr() net.Addr {
	if st.opener {
		return st.clientAddr()
	}
	return st.targetAddr()
}

// RemoteAddr is, on the side that accepted the stream, the original client's
// address (ClientAddr, else the GUID), so that servers behind the tunnel log
// the real client; on the side that opened it, the destination.
func (st *Stream) RemoteAddr() net.Addr {
	if st.opener {
		return st.targetAddr()
	}
	return st.clientAddr()
}

var _ net.Conn = (*Stream)(nil)
