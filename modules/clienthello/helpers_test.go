package clienthello

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// captureConn records what a TLS client writes and fails its first read,
// which stops the handshake right after the ClientHello.
type captureConn struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}
func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// captureHello returns the records of a real ClientHello sent by crypto/tls.
func captureHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	c := &captureConn{}
	err := tls.Client(c, cfg).HandshakeContext(context.Background())
	if err == nil {
		tb.Fatal("handshake against a silent peer succeeded")
	}
	if c.out.Len() == 0 {
		tb.Fatalf("crypto/tls wrote nothing: %v", err)
	}
	return c.out.Bytes()
}

// memConn is an in-memory net.Conn that serves data in reads of at most
// chunk bytes and records the read deadlines it is given.
type memConn struct {
	data      []byte
	chunk     int
	deadlines []time.Time
	written   bytes.Buffer
}

func newMemConn(data []byte, chunk int) *memConn {
	return &memConn{data: data, chunk: chunk}
}

func (c *memConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data))
	if c.chunk > 0 {
		n = min(n, c.chunk)
	}
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}
func (c *memConn) Write(p []byte) (int, error) { return c.written.Write(p) }
func (c *memConn) Close() error                { return nil }
func (c *memConn) LocalAddr() net.Addr         { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr        { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(t time.Time) error {
	return c.SetReadDeadline(t)
}
func (c *memConn) SetReadDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// handshakeBytes concatenates the fragments of the TLS records in wire.
func handshakeBytes(tb testing.TB, wire []byte) []byte {
	tb.Helper()
	var out []byte
	s := cryptobyte.String(wire)
	for !s.Empty() {
		var (
			typ     uint8
			version uint16
			frag    cryptobyte.String
		)
		if !s.ReadUint8(&typ) || !s.ReadUint16(&version) || !s.ReadUint16LengthPrefixed(&frag) {
			tb.Fatal("bad records")
		}
		out = append(out, frag...)
	}
	return out
}

// records splits handshake bytes into handshake records of at most size
// bytes each, as a client or a middlebox may.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// ext is one extension of a crafted ClientHello.
type ext struct {
	typ  uint16
	data []byte
}

// helloSpec describes a crafted ClientHello; the zero value plus a few
// fields is a valid one.
type helloSpec struct {
	msgType   uint8 // 0: ClientHello
	version   uint16
	sessionID []byte
	suites    []uint16
	noExts    bool
	exts      []ext
	trailing  []byte // garbage after the extensions block
}

// build returns the handshake message (header included) for s.
func (s helloSpec) build() []byte {
	if s.msgType == 0 {
		s.msgType = typeClientHello
	}
	if s.version == 0 {
		s.version = tls.VersionTLS12
	}
	if s.suites == nil {
		s.suites = []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	}
	var b cryptobyte.Builder
	b.AddUint8(s.msgType)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(s.version)
		b.AddBytes(make([]byte, clientRandomLen))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s.sessionID) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, cs := range s.suites {
				b.AddUint16(cs)
			}
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if !s.noExts {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, e := range s.exts {
					b.AddUint16(e.typ)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.data) })
				}
			})
		}
		b.AddBytes(s.trailing)
	})
	return b.BytesOrPanic()
}

// sniExt returns a server_name extension holding names, all host names.
func sniExt(names ...string) ext {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, n := range names {
			b.AddUint8(sniHostName)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(n)) })
		}
	})
	return ext{extServerName, b.BytesOrPanic()}
}

// alpnExt returns an ALPN extension offering protos.
func alpnExt(protos ...string) ext {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, p := range protos {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
		}
	})
	return ext{extALPN, b.BytesOrPanic()}
}

// isTimeout reports whether err is a read deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
