package clienthello

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/sockio"
)

// Defaults for Peek.
const (
	// DefaultMaxBytes bounds the bytes Peek reads. Real ClientHellos,
	// post-quantum key shares included, take 2 KiB or less; 16 KiB leaves
	// room for long ALPN lists and padding without letting a client make
	// the cloud buffer much per connection.
	DefaultMaxBytes = 16 << 10
	// DefaultTimeout bounds how long Peek waits for the ClientHello, so a
	// client that connects and stays silent cannot hold a goroutine.
	DefaultTimeout = 10 * time.Second
	// initialBuffer fits a typical ClientHello in one allocation.
	initialBuffer = 4 << 10
)

// Peek reads the ClientHello from conn and returns what it says, together
// with a connection that replays every byte read before reading on from
// conn. maxBytes bounds the bytes read (DefaultMaxBytes when <= 0) and
// timeout the wait (DefaultTimeout when <= 0).
//
// The replay connection is never nil, error or not, so the caller can always
// hand the connection on (a plain HTTP client after ErrNotTLS) or close it.
// Errors are ErrNotTLS, ErrMalformed, ErrTooLarge, ErrTruncated (wrapping
// io.ErrUnexpectedEOF), io.EOF when the client sent nothing, or the read
// error, such as one matching os.ErrDeadlineExceeded on timeout.
//
// Peek sets a read deadline on conn and clears it before returning: net.Conn
// cannot report an earlier deadline, and listeners hand out connections
// without one.
func Peek(conn net.Conn, maxBytes int, timeout time.Duration) (*Info, *Conn, error) {
	return PeekAfter(conn, nil, maxBytes, timeout)
}

// PeekAfter is Peek for a caller that has already read the connection's
// first bytes (to tell another protocol apart): first are taken as read
// from conn, and the returned Conn replays them too.
func PeekAfter(conn net.Conn, first []byte, maxBytes int, timeout time.Duration) (*Info, *Conn, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	replay := &Conn{Conn: conn, raw: sockio.New(conn)}
	var src io.Reader = conn
	if replay.raw != nil {
		src = replay.raw
	}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, replay, fmt.Errorf("clienthello: setting read deadline: %w", err)
	}
	buf, info, err := read(src, first, maxBytes)
	replay.buf = buf
	if derr := conn.SetReadDeadline(time.Time{}); derr != nil && err == nil {
		// A connection whose deadline cannot be cleared would fail its
		// next reads at random; better to fail now.
		return nil, replay, fmt.Errorf("clienthello: clearing read deadline: %w", derr)
	}
	return info, replay, err
}

// read reads from conn until the ClientHello is complete or fails, and
// returns the bytes read whatever happens.
func read(conn io.Reader, first []byte, maxBytes int) ([]byte, *Info, error) {
	buf := append(make([]byte, 0, max(min(initialBuffer, maxBytes), len(first))), first...)
	var a assembler
	need := max(1, len(buf))
	for {
		var readErr error
		for len(buf) < need && readErr == nil {
			if len(buf) == cap(buf) {
				// need <= maxBytes here, so the buffer never outgrows
				// the limit.
				grown := make([]byte, len(buf), min(max(2*cap(buf), need), maxBytes))
				copy(grown, buf)
				buf = grown
			}
			var n int
			// Reading whatever is available (not just what is needed)
			// saves system calls; anything past the ClientHello is
			// replayed like the rest.
			n, readErr = conn.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
		}
		msg, next, err := a.feed(buf)
		switch {
		case err != nil:
			return buf, nil, err
		case msg != nil:
			info, err := parseClientHello(msg)
			return buf, info, err
		case next > maxBytes:
			return buf, nil, fmt.Errorf("%w: needs more than %d bytes", ErrTooLarge, maxBytes)
		case readErr != nil:
			return buf, nil, readError(readErr, len(buf))
		}
		need = next
	}
}

// readError words a read failure: running out of input mid-hello is a
// truncated ClientHello, which callers tell apart from a client that never
// spoke.
func readError(err error, have int) error {
	if errors.Is(err, io.EOF) {
		if have == 0 {
			return fmt.Errorf("clienthello: %w", io.EOF)
		}
		return fmt.Errorf("%w after %d bytes: %w", ErrTruncated, have, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("clienthello: reading: %w", err)
}

// Conn is a net.Conn that first replays the bytes Peek read, then reads on
// from the connection it wraps. Writes and everything else go straight to the
// wrapped connection. Like any net.Conn it is safe for concurrent use.
type Conn struct {
	net.Conn
	// raw, when not nil, reads and writes the wrapped socket with raw
	// system calls (see sockio: a relay's hops then wake no thread of the
	// runtime's); nil for other connections.
	raw *sockio.IO
	mu  sync.Mutex
	buf []byte // not yet replayed; nil once drained
}

// Read replays buffered bytes first, then reads from the wrapped connection.
func (c *Conn) Read(p []byte) (int, error) {
	if n, ok := c.replay(p); ok {
		return n, nil
	}
	if c.raw != nil {
		return c.raw.Read(p)
	}
	return c.Conn.Read(p)
}

// Write writes to the wrapped connection.
func (c *Conn) Write(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.Write(p)
	}
	return c.Conn.Write(p)
}

// replay copies buffered bytes into p, reporting ok=false once drained.
func (c *Conn) replay(p []byte) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) == 0 {
		return 0, false
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	if len(c.buf) == 0 {
		c.buf = nil // let the buffer go as soon as it is replayed
	}
	return n, true
}

// Buffered returns how many peeked bytes remain to be replayed.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

// Peeked returns a copy of the bytes not yet replayed.
func (c *Conn) Peeked() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.buf...)
}

// Pending returns the bytes not yet replayed without copying them: for a
// caller that sends them on its own (a stream's early data) before it lets
// anything read the connection. They stay the Conn's: valid, and not to be
// modified, until the next Read, WriteTo or Discard.
func (c *Conn) Pending() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf
}

// Discard drops up to n of the bytes not yet replayed, as a Read of them
// would, and returns how many it dropped.
func (c *Conn) Discard(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n = max(min(n, len(c.buf)), 0)
	c.buf = c.buf[n:]
	if len(c.buf) == 0 {
		c.buf = nil
	}
	return n
}

// WriteTo writes the buffered bytes and then copies the wrapped connection
// to w until EOF. It lets io.Copy reach the wrapped connection's own fast
// paths (splice between TCP sockets) once the replay is done.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	c.mu.Lock()
	b := c.buf
	c.buf = nil
	c.mu.Unlock()
	var total int64
	if len(b) > 0 {
		n, err := w.Write(b)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	n, err := io.Copy(w, c.Conn)
	return total + n, err
}

// CloseWrite half-closes the wrapped connection when it supports it (TCP,
// TLS, Unix sockets), so proxies can pass a client's EOF along.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("clienthello: %T cannot half-close: %w", c.Conn, errors.ErrUnsupported)
}

// NetConn returns the wrapped connection. Reading from it directly skips
// the bytes not yet replayed.
func (c *Conn) NetConn() net.Conn { return c.Conn }

var (
	_ net.Conn    = (*Conn)(nil)
	_ io.WriterTo = (*Conn)(nil)
)
