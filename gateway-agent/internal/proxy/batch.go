package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// Coalescing. crypto/tls hands the connection under it one Write per TLS
// record: 16 KiB at most, and about 1.2 KiB for the first 128 KiB of a
// connection (dynamic record sizing). On a tunnel stream each Write is a
// Data frame, with its own trip through the session (flow control, a frame
// buffer, the writer), so a response would cross the tunnel in
// record-sized frames. Instead, a batchConn sits under each TLS connection,
// and the handler arms it around each Write and Flush of an HTTP/1.x
// response (batchedWriter), so that the records of one write leave as one
// Data frame. net/http needs the *tls.Conn itself (for Request.TLS and
// ALPN), hence the batch under it, reached through ConnContext.
//
// HTTP/2 is left alone: its server writes from goroutines of its own
// (whose writes no handler can bracket), each DATA frame of at most 16 KiB
// (the client's default frame size) in one or two records; the session
// writer merges the frames that queue up. Serving HTTP/2 from a connection
// that arms itself per write needs golang.org/x/net/http2's ServeConn,
// deprecated, for no measured gain.
//
// Whatever is written unarmed passes straight through: the handshake, the
// headers and tail that net/http flushes after the handler, a hijacked
// connection's traffic, HTTP/2, close_notify. A write that another
// goroutine makes while a batch is open (a TLS 1.3 KeyUpdate reply from
// the reader) joins the batch in order and leaves with it.

// copyBufferSize is ReverseProxy's copy buffer: one read from the upstream
// and one Write to the client per buffer. With the batching, each Write
// becomes one Stream.Write, so the buffer leaves room for the framing of
// its TLS records (at most five: four of 16 KiB and one that a partly
// filled bufio.Writer in net/http splits off), under 80 bytes each in any
// cipher suite the server offers, so that they fit one Data frame.
const copyBufferSize = tunnel.MaxDataSize - 5*80

// batchConn collects the writes made between Begin and Flush and writes
// them at once on Flush; outside a batch, writes go straight through.
// Unlike tunnel.BatchConn (which a session's connection keeps busy), it
// holds a buffer only while a batch is open: an idle keep-alive connection
// costs nothing.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      *[]byte
}

// batchBufs holds the batch buffers: a batch is one write of the HTTP
// layer (at most ReverseProxy's copy buffer) and its TLS framing.
var batchBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, tunnel.MaxFrameSize+4<<10)
	return &b
}}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = batchBufs.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// Begin opens a batch.
func (c *batchConn) Begin() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

// Flush closes the batch and writes what it collected in one Write. Every
// Begin is followed by a Flush; concurrent batches (which the handler
// does not make, see batchedWriter) would only end up sent in more pieces.
func (c *batchConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	if c.buf == nil {
		return nil
	}
	b := c.buf
	c.buf = nil
	var err error
	if len(*b) > 0 {
		_, err = c.Conn.Write(*b)
	}
	if cap(*b) <= 2*tunnel.MaxFrameSize {
		*b = (*b)[:0]
		batchBufs.Put(b)
	}
	return err
}

// bufferPool recycles ReverseProxy's copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, copyBufferSize)
}

func (b *bufferPool) Put(v []byte) { b.p.Put(&v) }

// batchListener makes each accepted connection a server-side TLS
// connection over a batchConn, so that http.Server.Serve sees a *tls.Conn
// (for Request.TLS and ALPN) while the handler can still reach the batch
// underneath (batchOf).
type batchListener struct {
	net.Listener
	cfg *tls.Config
}

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(&batchConn{Conn: c}, l.cfg), nil
}

// batchOf is the batchConn under a connection batchListener accepted.
func batchOf(c net.Conn) *batchConn {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	b, _ := tc.NetConn().(*batchConn)
	return b
}

type batchKey struct{}

// connContext makes the connection's batchConn available to the handler.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if b := batchOf(c); b != nil {
		return context.WithValue(ctx, batchKey{}, b)
	}
	return ctx
}

// batched wraps h so that an HTTP/1.x response's writes are batched.
// HTTP/2 requests are left alone: their writes happen on the HTTP/2
// server's goroutines.
func batched(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := r.Context().Value(batchKey{}).(*batchConn); ok && r.ProtoMajor == 1 {
			w = &batchedWriter{ResponseWriter: w, b: b, rc: http.NewResponseController(w)}
		}
		h.ServeHTTP(w, r)
	})
}

// batchedWriter arms the connection's batch around each Write and Flush of
// an HTTP/1.x response. Unwrap lets http.ResponseController (which
// ReverseProxy uses to flush and to hijack for upgrades) reach the rest.
type batchedWriter struct {
	http.ResponseWriter
	b  *batchConn
	rc *http.ResponseController
	// streaming is set once the response was flushed: see Write.
	streaming atomic.Bool
}

func (w *batchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *batchedWriter) Write(p []byte) (n int, err error) {
	w.b.Begin()
	defer func() {
		if ferr := w.b.Flush(); err == nil && ferr != nil {
			err = ferr
		}
	}()
	n, err = w.ResponseWriter.Write(p)
	if err == nil && w.streaming.Load() {
		// A response that was flushed is a stream (server-sent events,
		// or one of unknown length), which ReverseProxy flushes after
		// each write: doing it inside the batch lets the chunk's
		// trailing CRLF, which net/http holds until then, leave in the
		// same frame, not in one of its own. A response never flushed
		// (one of known length, an error page) keeps net/http's
		// buffering, and its Content-Length.
		err = w.rc.Flush()
	}
	return n, err
}

func (w *batchedWriter) FlushError() error {
	w.streaming.Store(true)
	w.b.Begin()
	err := w.rc.Flush()
	if ferr := w.b.Flush(); err == nil {
		err = ferr
	}
	return err
}

func (w *batchedWriter) Flush() { _ = w.FlushError() }
