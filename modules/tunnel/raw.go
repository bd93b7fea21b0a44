package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// RawUpgrade is the HTTP Upgrade token of the raw transport: after the
// upgrade, the connection carries the same frames as the WebSocket, each
// behind a 4-byte big-endian length instead of a WebSocket header. Both ends
// are ours, so the WebSocket's framing and the masking of every byte the
// agent sends (RFC 6455 requires it of clients) buy nothing over the TLS
// connection below.
//
// An agent offers it next to websocket in one upgrade request
// ("Upgrade: websocket, gatehouse-tunnel/2"); a cloud that knows it answers
// 101 with this token, an older cloud goes on with the WebSocket, so the
// offer costs no round trip and old clouds and old agents keep working.
const RawUpgrade = "gatehouse-tunnel/2"

// rawHeaderLen is the length prefix of a frame on the raw transport.
const rawHeaderLen = 4

// frameHeadroom is the room that pooled Data frames keep in front of them,
// so that the raw transport writes its length prefix in place and sends
// prefix and frame in one TLS write, without copying the frame, and the
// sealed transport the record's length as well (see SealedUpgrade).
const frameHeadroom = recordHeaderLen + rawHeaderLen

// RawConn adapts a connection that was upgraded to RawUpgrade (rwc, from
// the hijacked HTTP connection or the client's 101 response body). Reads
// come from r, which is rwc or a reader that yields bytes buffered during
// the upgrade before rwc's. batch, when not nil, is the BatchConn under
// rwc's TLS: each frame then reaches the network in one write.
//
// As with WebSocketConn, a context that ends during ReadMessage or
// WriteMessage closes the connection, and Close closes it at once.
func RawConn(rwc io.ReadWriteCloser, r io.Reader, batch *BatchConn) Conn {
	if r == nil {
		r = rwc
	}
	return &rawConn{rwc: rwc, r: r, batch: batch}
}

type rawConn struct {
	rwc   io.ReadWriteCloser
	r     io.Reader
	batch *BatchConn
	// buf is the frame returned by the last ReadMessage (see wsConn.buf).
	buf  *[]byte
	hdr  [rawHeaderLen]byte
	wbuf []byte // small frames with their prefix; the writer's only
	// holding is set between beginBatch and endBatch: frames collect in
	// batch until endBatch.
	holding bool

	closeOnce sync.Once
	closeErr  error
}

// watch closes the connection if ctx ends before the returned stop is
// called. A context that cannot end (the session's) costs nothing.
func (c *rawConn) watch(ctx context.Context) (stop func() bool) {
	if ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() { _ = c.Close() })
}

func (c *rawConn) ReadMessage(ctx context.Context) ([]byte, error) {
	if c.buf != nil {
		framePool.Put(c.buf)
		c.buf = nil
	}
	defer c.watch(ctx)()
	if _, err := io.ReadFull(c.r, c.hdr[:]); err != nil {
		return nil, c.ctxErr(ctx, err)
	}
	n := binary.BigEndian.Uint32(c.hdr[:])
	switch {
	case n > MaxFrameSize:
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	case n == 0:
		return nil, fmt.Errorf("%w: empty frame", ErrProtocol)
	}
	bp := framePool.Get().(*[]byte)
	b := (*bp)[:n]
	if _, err := io.ReadFull(c.r, b); err != nil {
		framePool.Put(bp)
		return nil, c.ctxErr(ctx, err)
	}
	c.buf = bp
	return b, nil
}

func (c *rawConn) keepFrame() *[]byte {
	f := c.buf
	c.buf = nil
	return f
}

// ctxErr prefers the context's error to the one closing the connection
// caused.
func (c *rawConn) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: connection closed inside a frame", io.ErrUnexpectedEOF)
	}
	return err
}

func (c *rawConn) WriteMessage(ctx context.Context, p []byte) error {
	if len(p) == 0 || len(p) > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(p))
	}
	// Control frames are small: copying them next to their prefix costs
	// less than a second TLS record.
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf[:0], uint32(len(p)))
	c.wbuf = append(c.wbuf, p...)
	err := c.send(ctx, c.wbuf)
	if cap(c.wbuf) > 4<<10 {
		c.wbuf = nil
	}
	return err
}

// writePair writes frames a and b, each behind its prefix, in one send
// (see Session.writePair).
func (c *rawConn) writePair(a, b []byte) error {
	for _, p := range [][]byte{a, b} {
		if len(p) == 0 || len(p) > MaxFrameSize {
			return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(p))
		}
	}
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf[:0], uint32(len(a)))
	c.wbuf = append(c.wbuf, a...)
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, uint32(len(b)))
	c.wbuf = append(c.wbuf, b...)
	err := c.send(context.Background(), c.wbuf)
	if cap(c.wbuf) > 4<<10 {
		c.wbuf = nil
	}
	return err
}

// writeWithHeadroom writes the frame buf[frameHeadroom:], using the room in
// front of it for the prefix.
func (c *rawConn) writeWithHeadroom(ctx context.Context, buf []byte) error {
	n := len(buf) - frameHeadroom
	if n <= 0 || n > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	buf = buf[frameHeadroom-rawHeaderLen:]
	binary.BigEndian.PutUint32(buf, uint32(n))
	return c.send(ctx, buf)
}

func (c *rawConn) send(ctx context.Context, b []byte) error {
	defer c.watch(ctx)()
	if c.holding {
		if _, err := c.rwc.Write(b); err != nil {
			return c.ctxErr(ctx, err)
		}
		return nil
	}
	if c.batch != nil {
		c.batch.Begin()
	}
	_, err := c.rwc.Write(b)
	if c.batch != nil {
		if ferr := c.batch.Flush(); err == nil {
			err = ferr
		}
	}
	if err != nil {
		return c.ctxErr(ctx, err)
	}
	return nil
}

func (c *rawConn) beginBatch() bool {
	if c.batch == nil {
		return false
	}
	c.batch.Begin()
	c.holding = true
	return true
}

func (c *rawConn) endBatch() error {
	c.holding = false
	return c.batch.Flush()
}

// frameBatcher is a Conn that can send several frames in one network
// write: the frames written between beginBatch (false: it cannot) and
// endBatch leave together at endBatch. The writing goroutine calls both.
type frameBatcher interface {
	beginBatch() bool
	endBatch() error
}

func (c *rawConn) Close() error {
	c.closeOnce.Do(func() {
		if c.batch != nil {
			// As in wsConn.Close: unblock a Flush first.
			_ = c.batch.Conn.Close()
		}
		if err := c.rwc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.closeErr = err
		}
	})
	return c.closeErr
}

// headroomWriter is a Conn that takes pooled Data frames with
// frameHeadroom free bytes in front (see rawConn.writeWithHeadroom).
type headroomWriter interface {
	writeWithHeadroom(ctx context.Context, buf []byte) error
}

// frameKeeper is a Conn whose frames lie in framePool buffers. keepFrame
// hands over the buffer of the frame the last ReadMessage returned (nil if
// it has none): the connection no longer reuses it, and the new owner puts
// it back in framePool. Only the reading goroutine calls it.
type frameKeeper interface {
	keepFrame() *[]byte
}

// TransportWebSocket names the WebSocket transport, beside RawUpgrade.
const TransportWebSocket = "websocket"

// AcceptTransport answers the agent's upgrade request on the cloud's side:
// with the raw transport when the agent offers it (RawUpgrade), else with a
// WebSocket as before. It returns the connection and the transport's name
// (RawUpgrade or TransportWebSocket). A failed upgrade is answered with an
// HTTP error.
func AcceptTransport(w http.ResponseWriter, r *http.Request) (Conn, string, error) {
	if Offers(r, SealedUpgrade) && r.TLS != nil {
		// A TLS connection whose exporter fails (TLS 1.2 without
		// extended master secret) is served the raw transport.
		if keys, err := DeriveSealedKeys(r.TLS); err == nil {
			c, err := acceptSealed(w, keys)
			if err != nil {
				return nil, "", err
			}
			return c, SealedUpgrade, nil
		}
	}
	if !Offers(r, RawUpgrade) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return nil, "", err
		}
		return WebSocketConn(c), TransportWebSocket, nil
	}
	nc, rd, err := HijackUpgrade(w, RawUpgrade)
	if err != nil {
		return nil, "", err
	}
	return RawConn(nc, rd, nil), RawUpgrade, nil
}

// HijackUpgrade answers an upgrade request with 101 and token and takes
// the connection over. It returns the connection and the reader to read it
// through: the connection itself, or a reader that first yields bytes that
// came right behind the request (an agent sends nothing before the 101, but
// nothing forbids it).
func HijackUpgrade(w http.ResponseWriter, token string) (net.Conn, io.Reader, error) {
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Upgrade", token)
	// As the WebSocket library does: the status goes out with the hijack,
	// and servers in front (Caddy) record it for their logs.
	w.WriteHeader(http.StatusSwitchingProtocols)
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("%s upgrade: hijack: %w", token, err)
	}
	if err := brw.Flush(); err != nil {
		_ = nc.Close()
		return nil, nil, fmt.Errorf("%s upgrade: %w", token, err)
	}
	// The server's timeouts were for the HTTP request; the session has
	// its own keepalive.
	_ = nc.SetDeadline(time.Time{})
	var rd io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		rd = io.MultiReader(io.LimitReader(brw.Reader, int64(n)), nc)
	}
	return nc, rd, nil
}

// acceptSealed answers with the sealed transport and its binding, and
// leaves the TLS connection for the socket under it.
//
// It takes the connection over before it answers, unlike HijackUpgrade:
// net/http keeps a read pending on a request without a body until the
// hijack, and one that saw the agent's first sealed record, sent as soon as
// the 101 arrived, would feed it to the TLS connection. So the 101 goes out
// after the hijack, written here (servers in front, Caddy, log no status).
func acceptSealed(w http.ResponseWriter, keys SealedKeys) (Conn, error) {
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("%s upgrade: hijack: %w", SealedUpgrade, err)
	}
	tc, ok := nc.(*tls.Conn)
	if !ok || brw.Reader.Buffered() > 0 {
		// Bytes behind the request went through TLS, where sealed
		// records never are: the agent broke the protocol.
		_ = nc.Close()
		return nil, fmt.Errorf("%s upgrade: not a bare TLS connection after the request", SealedUpgrade)
	}
	_ = nc.SetDeadline(time.Time{})
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n",
		SealedUpgrade, SealedBindingHeader, keys.BindingHeader())
	if err := brw.Flush(); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("%s upgrade: %w", SealedUpgrade, err)
	}
	return SealedConn(tc.NetConn(), keys, false)
}

// OffersRaw reports whether an upgrade request offers RawUpgrade.
func OffersRaw(r *http.Request) bool { return Offers(r, RawUpgrade) }

// Offers reports whether an upgrade request offers the transport token.
func Offers(r *http.Request, token string) bool {
	return r.Method == http.MethodGet && r.ProtoAtLeast(1, 1) &&
		HeaderHasToken(r.Header, "Connection", "upgrade") &&
		HeaderHasToken(r.Header, "Upgrade", token)
}

// HeaderHasToken reports whether the comma-separated values of h's key
// hold token, compared case-insensitively.
func HeaderHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
