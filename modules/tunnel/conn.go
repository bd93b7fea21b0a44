package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/coder/websocket"
)

// Conn is the message transport under a Session: it carries whole frames,
// in order, both ways. The WebSocket adapter is the production one; tests use
// others to simulate failures.
//
// ReadMessage is only ever called by one goroutine at a time, and the slice
// it returns only has to stay valid until the next ReadMessage call (the
// session copies what it keeps). WriteMessage is likewise called by one
// goroutine at a time and must not keep p after it returns. Close unblocks
// both and may be called more than once, from any goroutine.
type Conn interface {
	ReadMessage(ctx context.Context) ([]byte, error)
	WriteMessage(ctx context.Context, p []byte) error
	Close() error
}

// WebSocketConn adapts a coder/websocket connection: frames travel as binary
// messages, and the read limit is set to MaxFrameSize, so an oversized frame
// fails the read (with ErrFrameTooLarge) and closes the connection with
// status 1009.
//
// Close does not run the WebSocket closing handshake: it closes the TCP
// connection at once, because a session is closed when the peer is gone or
// misbehaving, and waiting for its close frame could take seconds. A session
// that wants the peer to know why sends an Ack first (Session.CloseWithReason).
func WebSocketConn(c *websocket.Conn) Conn {
	c.SetReadLimit(MaxFrameSize)
	return &wsConn{c: c}
}

// WebSocketClientConn is WebSocketConn for the dialing side, whose
// connection to the network is bc: each frame reaches the network in one
// write (see BatchConn).
func WebSocketClientConn(c *websocket.Conn, bc *BatchConn) Conn {
	c.SetReadLimit(MaxFrameSize)
	return &wsConn{c: c, batch: bc}
}

type wsConn struct {
	c     *websocket.Conn
	batch *BatchConn // nil: writes go straight to the network
	// buf is the frame returned by the last ReadMessage. It comes from
	// framePool and goes back at the start of the next call, before the read
	// blocks, so that an idle session holds no read buffer.
	buf       *[]byte
	closeOnce sync.Once
	closeErr  error
}

// framePool holds buffers of a frame's capacity, shared by the transports'
// reads (frames from offset 0; a sealed record with its length and tag,
// and the readAhead that may come behind it) and the session writer
// (encoded Data frames from offset frameHeadroom, with frameTailroom
// behind, see headroomWriter).
//
// A frame's buffer may outlive its read: see frameKeeper.
var framePool = sync.Pool{New: func() any {
	b := make([]byte, 0, frameHeadroom+MaxFrameSize+frameTailroom+readAhead)
	return &b
}}

func (w *wsConn) ReadMessage(ctx context.Context) ([]byte, error) {
	if w.buf != nil {
		framePool.Put(w.buf)
		w.buf = nil
	}
	typ, r, err := w.c.Reader(ctx)
	if err != nil {
		return nil, wsError(err)
	}
	if typ != websocket.MessageBinary {
		return nil, fmt.Errorf("%w: text websocket message", ErrProtocol)
	}
	bp := framePool.Get().(*[]byte)
	b := (*bp)[:MaxFrameSize]
	n, err := readFrame(r, b)
	if err != nil {
		framePool.Put(bp)
		return nil, err
	}
	w.buf = bp
	return b[:n], nil
}

// readFrame reads a whole message into b, which holds MaxFrameSize bytes.
func readFrame(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, wsError(err)
		}
	}
	// A frame of exactly MaxFrameSize still has its EOF to read. Anything
	// more is too large: reading on until the limit reader fails also sends
	// the peer close status 1009.
	var one [1]byte
	for {
		m, err := r.Read(one[:])
		n += m
		switch {
		case errors.Is(err, io.EOF) && n == len(b):
			return n, nil
		case errors.Is(err, io.EOF):
			return 0, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
		case err != nil:
			return 0, wsError(err)
		}
	}
}

func wsError(err error) error {
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return fmt.Errorf("%w: %w", ErrFrameTooLarge, err)
	}
	return err
}

func (w *wsConn) keepFrame() *[]byte {
	f := w.buf
	w.buf = nil
	return f
}

func (w *wsConn) WriteMessage(ctx context.Context, p []byte) error {
	if w.batch == nil {
		return w.c.Write(ctx, websocket.MessageBinary, p)
	}
	w.batch.Begin()
	err := w.c.Write(ctx, websocket.MessageBinary, p)
	if ferr := w.batch.Flush(); err == nil {
		err = ferr
	}
	return err
}

func (w *wsConn) Close() error {
	w.closeOnce.Do(func() {
		if w.batch != nil {
			// Close the network first: a Flush blocked on a peer that
			// does not read lets go at once, instead of holding up the
			// TLS close_notify behind it for its five-second deadline.
			_ = w.batch.Conn.Close()
		}
		// A connection that a failed read already closed is, for the
		// session, successfully closed.
		if err := w.c.CloseNow(); err != nil && !errors.Is(err, net.ErrClosed) {
			w.closeErr = err
		}
	})
	return w.closeErr
}
