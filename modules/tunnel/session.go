package tunnel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// closeTimeout bounds the sending of the Ack that tells the peer why the
// session closes.
const closeTimeout = time.Second

// sendQueueLen is how many ordered frames (Data, Terminator, Initiator, Ack
// accepting a stream) may wait for the writer. Each holds up to MaxFrameSize,
// so this bounds the session's send-side memory beyond what writers hold.
const sendQueueLen = 32

// Session multiplexes streams over one Conn. Both sides are symmetrical:
// either may Open streams, and each Accepts the other's.
//
// Three goroutines, owned by the session and stopped by Close (or by the
// peer going away), do its work: a reader that dispatches incoming frames
// and never blocks on a stream (it buffers up to the stream's window, which
// the peer may not exceed), a writer that writes the queued frames to the
// Conn (control frames first, then Data in the order streams queued it;
// a small frame that finds nothing queued is written by its caller, see
// enqueue), and a keepalive ticker.
type Session struct {
	conn  Conn
	cfg   Config
	start time.Time // base of the monotonic timestamps below

	done      chan struct{}
	closeOnce sync.Once
	err       error  // why the session closed; written before done is closed
	goodbye   []byte // Ack the writer sends before closing; written before done
	killTimer *time.Timer

	mu      sync.Mutex
	streams map[GUID]*Stream

	accept chan *Stream
	// serve, when set (ServeSession), takes the streams the peer opens
	// instead of accept.
	serve func(*Stream)

	// sendq carries frames whose order matters relative to a stream's Data.
	sendq chan outFrame
	// queued counts the frames handed to sendq and not yet written
	// (waiting in it, or taken by the writer). writeMu is held by whoever
	// writes to conn: the writer, or enqueue writing a frame itself when
	// nothing is queued (see enqueue).
	queued  atomic.Int64
	writeMu sync.Mutex
	// ctrl carries frames that may overtake Data (Window, Ping, Pong,
	// refusals). The reader queues to it, so it never blocks; its length
	// is bounded by closing the session when a peer makes it grow without
	// reading.
	ctrlMu   sync.Mutex
	ctrl     [][]byte
	ctrlWake chan struct{}

	peerVersion atomic.Uint32 // see SetPeerVersion; 0 stands for MinProtocolVersion

	lastRecv   atomic.Int64 // time of the last frame from the peer
	writeSince atomic.Int64 // start of the write in progress, 0 when idle

	pingMu    sync.Mutex
	pingNonce uint64
	pingSent  time.Time
	rtt       atomic.Int64

	wg sync.WaitGroup
}

// outFrame is a queued frame; pooled is set when it came from framePool.
type outFrame struct {
	b      []byte
	pooled *[]byte
}

// NewSession starts a session over conn, whose handshake (ClientHandshake or
// ServerHandshake) is already done. The session owns conn from now on and
// closes it when it ends.
func NewSession(conn Conn, cfg Config) (*Session, error) {
	return newSession(conn, cfg, nil)
}

// ServeSession is NewSession for a side that serves every stream the peer
// opens the same way: the session's reader calls start with each new
// stream, instead of queueing it for Accept (which then only waits for
// the session's end). start runs on the reader, so it must not block: it
// starts the stream's goroutine, which answers the stream (Stream.Ack) and
// closes it when done. Compared with a loop that Accepts and starts the
// goroutine, a new stream waits for one scheduling hop less. The streams
// started are not bounded by AcceptBacklog, only by MaxStreams.
func ServeSession(conn Conn, cfg Config, start func(*Stream)) (*Session, error) {
	if start == nil {
		return nil, fmt.Errorf("%w: ServeSession without a start function", ErrInvalidConfig)
	}
	return newSession(conn, cfg, start)
}

func newSession(conn Conn, cfg Config, start func(*Stream)) (*Session, error) {
	if err := VerifyConfig(cfg); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	s := &Session{
		conn:     conn,
		cfg:      cfg,
		start:    time.Now(),
		done:     make(chan struct{}),
		streams:  make(map[GUID]*Stream),
		accept:   make(chan *Stream, cfg.AcceptBacklog),
		serve:    start,
		sendq:    make(chan outFrame, sendQueueLen),
		ctrlWake: make(chan struct{}, 1),
	}
	s.lastRecv.Store(s.now())
	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.keepalive()
	return s, nil
}

// now is the time since the session started, in nanoseconds, never 0.
func (s *Session) now() int64 { return int64(time.Since(s.start)) + 1 }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended (it wraps ErrSessionClosed, and the cause:
// ErrKeepAliveTimeout, ErrClosedByPeer, ErrProtocol, a transport error...),
// or is nil while it runs.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// RTT is the round-trip time measured by the last answered keepalive ping,
// 0 before the first one.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// NumStreams is the number of open streams, both directions.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// Close ends the session and every stream on it, and waits for the
// session's goroutines to exit.
func (s *Session) Close() error {
	return s.CloseWithReason("")
}

// CloseWithReason is Close, telling the peer why first (as an Ack with Ok
// false and the zero GUID, sent within a second): the peer's session ends
// with an error wrapping ErrClosedByPeer and the reason. Queued data that
// the writer has not sent yet is dropped.
func (s *Session) CloseWithReason(reason string) error {
	if len(reason) > MaxReasonLen {
		reason = reason[:MaxReasonLen]
	}
	s.shutdown(ErrSessionClosed, reason)
	s.wg.Wait()
	return nil
}

// shutdown ends the session once. cause becomes Err (wrapped in
// ErrSessionClosed); a non-empty reason is sent to the peer first.
func (s *Session) shutdown(cause error, reason string) {
	s.closeOnce.Do(func() {
		if errors.Is(cause, ErrSessionClosed) {
			s.err = cause
		} else {
			s.err = fmt.Errorf("%w: %w", ErrSessionClosed, cause)
		}
		if reason != "" {
			if b, err := Encode(Ack{Ok: false, Message: reason}); err == nil {
				// The writer sends the goodbye; the reader drains what the
				// peer still sends until it hangs up, so that closing does
				// not reset the connection and destroy the goodbye in the
				// peer's receive buffer. The timer bounds both, and unblocks
				// a writer stuck on a peer that does not read.
				s.goodbye = b
				s.killTimer = time.AfterFunc(closeTimeout, func() { _ = s.conn.Close() })
			}
		}
		close(s.done)
		if s.goodbye == nil {
			_ = s.conn.Close()
		}
		s.mu.Lock()
		streams := s.streams
		s.streams = nil
		s.mu.Unlock()
		for _, st := range streams {
			st.sessionClosed()
		}
	})
}

func (s *Session) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// SetPeerVersion records the protocol version the peer announced in its
// handshake (the Version of the Handshake ServerHandshake returns), so that
// Open writes Initiators the peer understands. Until it is called the
// session assumes MinProtocolVersion, which every agent reads. Call it
// before the first Open.
func (s *Session) SetPeerVersion(v uint16) { s.peerVersion.Store(uint32(v)) }

// Open starts a stream toward the peer: it sends init as an Initiator (with
// a fresh GUID and this side's window) and waits for the peer's Ack. A
// refusal returns a *RefusedError with the peer's reason. If ctx ends first,
// the stream is abandoned (the peer is told with a Terminator).
//
// A peer older than VersionSource (see SetPeerVersion) is sent init's
// Source in Gatename instead, as version 1 clouds did on a forward's target
// leg; the stream's own Initiator keeps both.
func (s *Session) Open(ctx context.Context, init Initiator) (*Stream, error) {
	return s.open(ctx, init, nil, false)
}

// open is Open, sending early behind the Initiator (see OpenEarly).
// typedAddrs is encodeInitiator's: init's addresses need no parsing.
func (s *Session) open(ctx context.Context, init Initiator, early []byte, typedAddrs bool) (*Stream, error) {
	init.GUID = NewGUID()
	init.Window = s.cfg.StreamWindow
	wire := init
	if init.Source != "" && s.peerVersion.Load() < VersionSource {
		wire.Gatename, wire.Source = init.Source, ""
	}
	b, err := initiatorFrame(wire, typedAddrs)
	if err != nil {
		return nil, err
	}
	st := newStream(s, init, true)
	// Counted before the Initiator leaves: the Ack may come back at once,
	// and acked takes the early data off the credit it grants.
	st.early = int64(len(early))
	s.mu.Lock()
	switch {
	case s.streams == nil:
		s.mu.Unlock()
		return nil, s.err
	case len(s.streams) >= s.cfg.MaxStreams:
		s.mu.Unlock()
		return nil, ErrTooManyStreams
	}
	s.streams[init.GUID] = st
	s.mu.Unlock()

	var f outFrame
	if len(early) > 0 {
		f = dataFrame(st.id, early)
	}
	if sent, err := s.writePair(b, f); sent || err != nil {
		if err != nil {
			return nil, err
		}
	} else {
		if err := s.enqueue(ctx, outFrame{b: b}, nil, nil); err != nil {
			if f.pooled != nil {
				framePool.Put(f.pooled)
			}
			s.remove(st)
			return nil, err
		}
		if f.b != nil {
			if err := s.enqueue(ctx, f, nil, nil); err != nil {
				framePool.Put(f.pooled)
				st.abandon()
				return nil, err
			}
		}
	}
	select {
	case ack := <-st.ackCh:
		if !ack.Ok {
			// The read loop removes a refused stream too, but maybe
			// after this caller has moved on; no refused stream may
			// count against the session's limit once Open returns.
			s.remove(st)
			return nil, &RefusedError{Reason: ack.Message}
		}
		return st, nil
	case <-ctx.Done():
		st.abandon()
		return nil, ctx.Err()
	case <-s.done:
		return nil, s.err
	}
}

// OpenEarly is Open for a stream whose first bytes are known already (the
// ClientHello of a visitor's connection): to a peer of VersionEarlyData or
// later, early (at most MaxEarlyData bytes) goes out as Data right behind
// the Initiator, before the peer's Ack, so that the peer can pass it on as
// soon as it accepts instead of one round trip later. To an older peer, or
// for more bytes, it is written after the Ack. A refused stream drops the
// early data. early is not kept.
func (s *Session) OpenEarly(ctx context.Context, init Initiator, early []byte) (*Stream, error) {
	return s.openEarly(ctx, init, early, false)
}

// OpenMeta is OpenEarly (Open when early is empty) for the stream m
// describes, as m.Initiator. Its addresses are typed already, so the
// Initiator is encoded without parsing back what m.Initiator formatted: a
// new connection's Initiator costs that much less.
func (s *Session) OpenMeta(ctx context.Context, m Meta, early []byte) (*Stream, error) {
	init, typedAddrs := m.initiator()
	return s.openEarly(ctx, init, early, typedAddrs)
}

func (s *Session) openEarly(ctx context.Context, init Initiator, early []byte, typedAddrs bool) (*Stream, error) {
	if len(early) == 0 || len(early) > MaxEarlyData || s.peerVersion.Load() < VersionEarlyData {
		st, err := s.open(ctx, init, nil, typedAddrs)
		if err != nil || len(early) == 0 {
			return st, err
		}
		if _, err := st.Write(early); err != nil {
			_ = st.Close()
			return nil, err
		}
		return st, nil
	}
	return s.open(ctx, init, early, typedAddrs)
}

// Accept returns the next stream the peer opened. The caller must answer it
// with Stream.Ack (true to accept, false to refuse): until then the peer's
// Open waits. Streams not accepted before the session closes are dropped.
// On a ServeSession, whose streams go to its start function, Accept only
// waits for ctx or the session's end.
func (s *Session) Accept(ctx context.Context) (*Stream, error) {
	select {
	case st := <-s.accept:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, s.err
	}
}

// remove forgets st, so that later frames for it are ignored.
func (s *Session) remove(st *Stream) {
	s.mu.Lock()
	if s.streams != nil && s.streams[st.id] == st {
		delete(s.streams, st.id)
	}
	s.mu.Unlock()
}

func (s *Session) lookup(g GUID) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[g]
}

// directWriteMax bounds the frames enqueue may write itself. Small frames
// are requests, responses and handshakes, for which a scheduling hop is
// latency; a bulk transfer's frames (a TLS server's full 16 KiB records,
// a relay's large reads) go through the writer, which merges those that
// queue up behind a write into 64 KiB frames: fewer, larger writes.
const directWriteMax = 16 << 10

// enqueue hands an ordered frame to the writer, waiting for room. stop and
// expired (either may be nil) abort the wait for a closing stream or a
// passed deadline.
//
// When nothing is queued and no write is in progress, a small frame is
// written at once on the caller's goroutine instead: a request or response that
// finds the session idle then reaches the network without waking the
// writer, one scheduling hop less per frame on each side of the tunnel.
// Frames cannot overtake one another that way: every frame queued before
// is written once queued is back to 0, and all writes hold writeMu.
func (s *Session) enqueue(ctx context.Context, f outFrame, stop <-chan struct{}, expired <-chan struct{}) error {
	if len(f.b) < directWriteMax && s.queued.Load() == 0 && s.writeMu.TryLock() {
		if s.queued.Load() == 0 && !s.closed() {
			err := s.writeFrame(f)
			s.writeMu.Unlock()
			if f.pooled != nil {
				framePool.Put(f.pooled)
			}
			if err != nil {
				s.shutdown(err, "")
				return s.err
			}
			return nil
		}
		s.writeMu.Unlock()
	}
	s.queued.Add(1)
	select {
	case s.sendq <- f:
		return nil
	default:
	}
	select {
	case s.sendq <- f:
		return nil
	case <-s.done:
		s.queued.Add(-1)
		return s.err
	case <-ctx.Done():
		s.queued.Add(-1)
		return ctx.Err()
	case <-stop:
		s.queued.Add(-1)
		return ErrStreamClosed
	case <-expired:
		s.queued.Add(-1)
		return errDeadline
	}
}

// writePair writes the Initiator b and the early Data f (if any) of an
// Open in one network write, when the session is idle and the transport
// can (pairWriter): the peer gets the stream and its first bytes in one
// read, and this side makes one system call instead of two. sent false
// (and no error) leaves both to the caller, f unreleased.
func (s *Session) writePair(b []byte, f outFrame) (sent bool, err error) {
	pw, ok := s.conn.(pairWriter)
	if !ok || f.b == nil || len(b)+len(f.b) >= directWriteMax || s.queued.Load() != 0 || !s.writeMu.TryLock() {
		return false, nil
	}
	if s.queued.Load() != 0 || s.closed() {
		s.writeMu.Unlock()
		return false, nil
	}
	s.writeSince.Store(s.now())
	err = pw.writePair(b, f.b)
	s.writeSince.Store(0)
	s.writeMu.Unlock()
	framePool.Put(f.pooled)
	if err != nil {
		s.shutdown(err, "")
		return true, s.err
	}
	return true, nil
}

// pooledHolder is a frameBatcher that writes the pooled frames it was
// given during a batch at endBatch, from their buffers, which must stay
// untouched until then.
type pooledHolder interface {
	holdsPooled() bool
}

func holdsPooled(c Conn) bool {
	h, ok := c.(pooledHolder)
	return ok && h.holdsPooled()
}

// pairWriter is a Conn that can write two frames in one network write.
type pairWriter interface {
	writePair(a, b []byte) error
}

// queueCtrl hands a frame that may overtake Data to the writer, without
// blocking.
func (s *Session) queueCtrl(msg Message) error {
	b, err := Encode(msg)
	if err != nil {
		return err
	}
	s.ctrlMu.Lock()
	if len(s.ctrl) >= s.maxCtrl() {
		s.ctrlMu.Unlock()
		err := fmt.Errorf("%w: control queue full, the peer does not read", ErrProtocol)
		s.shutdown(err, "")
		return err
	}
	s.ctrl = append(s.ctrl, b)
	s.ctrlMu.Unlock()
	select {
	case s.ctrlWake <- struct{}{}:
	default:
	}
	return nil
}

// maxCtrl bounds the control queue: every stream may have a Window update
// and an Ack pending, plus pings and pongs. More means the writer is stuck.
func (s *Session) maxCtrl() int { return 2*s.cfg.MaxStreams + 1024 }

func (s *Session) takeCtrl() [][]byte {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	if len(s.ctrl) == 0 {
		return nil
	}
	c := s.ctrl
	s.ctrl = nil
	return c
}

func (s *Session) write(b []byte) error {
	s.writeSince.Store(s.now())
	// A context without Done: coder/websocket would arm a timer per write
	// for a cancellable one, and a stuck write is undone by closing the conn.
	err := s.conn.WriteMessage(context.Background(), b)
	s.writeSince.Store(0)
	return err
}

// writeFrame writes a queued frame; a pooled one goes to a transport that
// can use its headroom without a copy.
func (s *Session) writeFrame(f outFrame) error {
	hw, ok := s.conn.(headroomWriter)
	if !ok || f.pooled == nil {
		return s.write(f.b)
	}
	s.writeSince.Store(s.now())
	err := hw.writeWithHeadroom(context.Background(), (*f.pooled)[:frameHeadroom+len(f.b)])
	s.writeSince.Store(0)
	return err
}

// maxBatchBytes bounds the frames the writer sends in one network write.
const maxBatchBytes = 4 * MaxFrameSize

func (s *Session) writeLoop() {
	defer s.wg.Done()
	defer func() {
		// After a goodbye the reader closes the conn, once the peer hung up.
		if s.goodbye == nil {
			_ = s.conn.Close()
		}
	}()
	// pending is a queued frame taken while merging that did not merge.
	var pending outFrame
	// merged takes f and the Data of the same stream that queued up
	// behind it (see coalesce); the first frame that does not merge is
	// left in pending, to be written next.
	merged := func(f outFrame) (outFrame, int64) {
		frames := int64(1)
		for {
			select {
			case g := <-s.sendq:
				if !coalesce(&f, g) {
					pending = g
					return f, frames
				}
				frames++
				framePool.Put(g.pooled)
			default:
				return f, frames
			}
		}
	}
	// next is the frame to write after one in the same batch, if one is
	// ready without waiting.
	next := func() (outFrame, bool) {
		if pending.b != nil {
			f := pending
			pending = outFrame{}
			return f, true
		}
		select {
		case f := <-s.sendq:
			return f, true
		default:
			return outFrame{}, false
		}
	}
	batcher, _ := s.conn.(frameBatcher)
	var held []*[]byte // pooled frames written at endBatch
	for {
		// Control frames go first: they are small, and a Pong or a Window
		// update must not wait behind a queue of Data.
		if ctrl := s.takeCtrl(); ctrl != nil {
			s.writeMu.Lock()
			for _, b := range ctrl {
				if err := s.write(b); err != nil {
					s.writeMu.Unlock()
					s.shutdown(err, "")
					return
				}
			}
			s.writeMu.Unlock()
			continue
		}
		var f outFrame
		if pending.b != nil && !s.closed() {
			f, pending = pending, outFrame{}
		} else {
			select {
			case <-s.ctrlWake:
				continue
			case f = <-s.sendq:
			case <-s.done:
				if s.goodbye != nil {
					ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
					s.writeMu.Lock()
					_ = s.conn.WriteMessage(ctx, s.goodbye)
					s.writeMu.Unlock()
					cancel()
				}
				return
			}
		}
		f, frames := merged(f)
		s.writeMu.Lock()
		// Frames that are ready behind this one go out in the same
		// network write, up to maxBatchBytes, where the transport
		// batches (the agent's): one system call for several frames.
		batching := batcher != nil && batcher.beginBatch()
		// A transport that writes pooled frames from their own buffers
		// at endBatch (the sealed one) gets them back after it.
		holding := batching && holdsPooled(s.conn)
		release := func(p *[]byte) {
			switch {
			case p == nil:
			case holding:
				held = append(held, p)
			default:
				framePool.Put(p)
			}
		}
		err := s.writeFrame(f)
		release(f.pooled)
		for written := len(f.b); batching && err == nil && written < maxBatchBytes; {
			g, ok := next()
			if !ok {
				break
			}
			var n int64
			g, n = merged(g)
			frames += n
			written += len(g.b)
			err = s.writeFrame(g)
			release(g.pooled)
		}
		if batching {
			if ferr := batcher.endBatch(); err == nil {
				err = ferr
			}
		}
		for i, p := range held {
			framePool.Put(p)
			held[i] = nil
		}
		held = held[:0]
		s.writeMu.Unlock()
		s.queued.Add(-frames)
		if err != nil {
			if pending.pooled != nil {
				framePool.Put(pending.pooled)
			}
			s.shutdown(err, "")
			return
		}
	}
}

func (s *Session) readLoop() {
	defer s.wg.Done()
	for {
		// As for writes, Close unblocks the read; no cancellable context.
		b, err := s.conn.ReadMessage(context.Background())
		if err != nil {
			s.shutdown(err, "")
			_ = s.conn.Close()
			if s.killTimer != nil {
				s.killTimer.Stop()
			}
			return
		}
		if s.closed() {
			// Draining after a goodbye.
			continue
		}
		s.lastRecv.Store(s.now())
		if err := s.handle(b); err != nil {
			if errors.Is(err, ErrClosedByPeer) || errors.Is(err, ErrSessionClosed) {
				s.shutdown(err, "")
			} else {
				// Tell the peer what it did wrong before hanging up.
				s.shutdown(err, err.Error())
			}
		}
	}
}

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// handle dispatches one incoming frame. It never blocks on a stream.
func (s *Session) handle(b []byte) error {
	if len(b) > 0 && MessageType(b[0]) == TypeData {
		g, p, err := decodeData(b)
		if err != nil {
			return err
		}
		if st := s.lookup(g); st != nil {
			keeper, _ := s.conn.(frameKeeper)
			return st.receive(p, keeper)
		}
		// A stream closed here while the peer was still sending: normal.
		return nil
	}
	if len(b) > 0 && MessageType(b[0]) == TypeInitiator {
		m, err := decodeInitiator(b)
		if err != nil {
			return err
		}
		return s.handleInitiator(m)
	}
	msg, err := Decode(b)
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case Initiator:
		return s.handleInitiator(m)
	case Ack:
		return s.handleAck(m)
	case Window:
		if st := s.lookup(m.GUID); st != nil {
			return st.credit(m.Credit)
		}
	case Terminator:
		if st := s.lookup(m.GUID); st != nil {
			st.terminated(m.Half)
		}
	case Ping:
		return s.queueCtrl(Pong(m))
	case Pong:
		s.pingMu.Lock()
		if m.Nonce == s.pingNonce && !s.pingSent.IsZero() {
			s.rtt.Store(int64(time.Since(s.pingSent)))
			s.pingSent = time.Time{}
		}
		s.pingMu.Unlock()
	default:
		return violation("unexpected %v after the handshake", msg.Type())
	}
	return nil
}

func (s *Session) handleInitiator(m Initiator) error {
	refuse := func(reason string) error {
		return s.queueCtrl(Ack{Ok: false, Message: reason, GUID: m.GUID})
	}
	st := newStream(s, m, false)
	s.mu.Lock()
	switch {
	case s.streams == nil:
		s.mu.Unlock()
		return nil
	case s.streams[m.GUID] != nil:
		s.mu.Unlock()
		return refuse(ReasonDuplicateStream)
	case len(s.streams) >= s.cfg.MaxStreams:
		s.mu.Unlock()
		return refuse(fmt.Sprintf("%s (limit %d)", ReasonTooManyStreams, s.cfg.MaxStreams))
	}
	s.streams[m.GUID] = st
	s.mu.Unlock()
	if s.serve != nil {
		s.serve(st)
		return nil
	}
	select {
	case s.accept <- st:
		return nil
	default:
		s.remove(st)
		return refuse(ReasonBacklogFull)
	}
}

func (s *Session) handleAck(m Ack) error {
	if m.GUID.IsZero() {
		if m.Ok {
			return violation("session ack after the handshake")
		}
		return fmt.Errorf("%w: %s", ErrClosedByPeer, m.Message)
	}
	st := s.lookup(m.GUID)
	if st == nil {
		// An Open that gave up: its Terminator is on the way.
		return nil
	}
	return st.acked(m)
}

func (s *Session) keepalive() {
	defer s.wg.Done()
	// A first ping right away gives an RTT before the first interval.
	s.ping()
	t := time.NewTicker(s.cfg.KeepAliveInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		now := s.now()
		if now-s.lastRecv.Load() > int64(s.cfg.KeepAliveTimeout) {
			s.shutdown(fmt.Errorf("%w: nothing received for %v", ErrKeepAliveTimeout, s.cfg.KeepAliveTimeout), "")
			return
		}
		if ws := s.writeSince.Load(); ws != 0 && now-ws > int64(s.cfg.WriteTimeout) {
			s.shutdown(fmt.Errorf("%w: a frame took over %v", ErrWriteTimeout, s.cfg.WriteTimeout), "")
			return
		}
		s.ping()
	}
}

func (s *Session) ping() {
	nonce := rand.Uint64()
	s.pingMu.Lock()
	s.pingNonce = nonce
	s.pingSent = time.Now()
	s.pingMu.Unlock()
	_ = s.queueCtrl(Ping{Nonce: nonce})
}
