package tunnel

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"

	"github.com/gatehouse-project/gatehouse/modules/sockio"
)

// SealedUpgrade is the HTTP Upgrade token of the sealed transport, the raw
// transport's frames in records that the tunnel seals itself instead of
// crypto/tls.
//
// Both ends keep the TLS connection they upgraded for its authentication,
// but not its record layer: each derives the keys of the sealed records from
// it with the TLS exporter (RFC 8446 §7.5, RFC 5705), and reads and writes
// the socket under it. That lets a record be read into the buffer its Data
// frame is delivered from, and opened there, and a Data frame be sealed
// where it was read from the gateway's upstream: crypto/tls decrypts into a
// buffer of its own and copies out (a sixth of the cloud's CPU in a bulk
// transfer), and the agent's TLS records were copied into one write per
// frame. It is what kernel TLS would give, which the kernel under the cloud
// may not have.
//
// A record is a 4-byte big-endian length n, then n bytes: AES-128-GCM of one
// or more whole frames, each behind its 4-byte length as on the raw
// transport, and the 16-byte tag. The length is the additional data; the
// nonce is the direction's IV XOR the record's number (as TLS 1.3 does), so
// a record that is dropped, repeated, reordered, moved to the other
// direction or altered fails its tag, and the session ends. Every
// sealedRekeyRecords records a direction's secret is replaced by one derived
// from it (sealedKeys.next), which keeps each key well inside AES-GCM's
// limits without a message.
//
// The agent offers it beside the raw transport and the WebSocket; a cloud
// that knows it answers 101 with this token and the Gatehouse-Tunnel-Binding
// header (base64 of exporter bytes of another label). The agent compares the
// binding with its own: a different one means the two ends do not share the
// TLS connection (a TLS-terminating proxy between them), and the agent
// dials again without the offer. The agent speaks first after the upgrade
// (the tunnel handshake), so no sealed byte can follow the 101 into the
// agent's TLS reader.
const SealedUpgrade = "gatehouse-tunnel/3"

// SealedBindingHeader carries the cloud's binding in the 101 response.
const SealedBindingHeader = "Gatehouse-Tunnel-Binding"

const (
	// recordHeaderLen is the length in front of a sealed record.
	recordHeaderLen = 4
	// sealTagLen is the AES-GCM tag behind a sealed record.
	sealTagLen = 16
	// maxRecordPlain is the most plaintext a record holds: the largest
	// frame behind its length, or several smaller ones.
	maxRecordPlain = rawHeaderLen + MaxFrameSize
	// maxRecordLen bounds the length of a record (its ciphertext and tag).
	maxRecordLen = maxRecordPlain + sealTagLen
	// frameTailroom is the room pooled frames keep behind them for the tag.
	frameTailroom = sealTagLen
	// readAhead is how far a read may go past the record it is for: the
	// next record's length and start come with it, and so do small
	// records that follow, without a read of their own.
	readAhead = 512
	// sealedRekeyRecords is how many records a direction seals with one
	// key: 2^20 records of at most 64 KiB, 64 GiB, far below the 2^38
	// bytes (2^24.5 records of 16 KiB) that RFC 8446 §5.5 allows AES-GCM.
	sealedRekeyRecords = 1 << 20
	// sealedOutKeep is the largest batch buffer kept between batches.
	sealedOutKeep = 64 << 10

	sealedExporterLabel = "EXPORTER-gatehouse-tunnel/3 keys"
	sealedBindingLabel  = "EXPORTER-gatehouse-tunnel/3 binding"
	sealedBindingLen    = 16
)

// ErrSealedBinding is the agent's error when the cloud's binding is not its
// own: the two ends do not share one TLS connection.
var ErrSealedBinding = errors.New("sealed transport: the cloud's TLS binding differs from ours (a TLS proxy between us?)")

// SealedKeys are the secrets of a sealed transport's two directions, derived
// from the TLS connection that was upgraded.
type SealedKeys struct {
	agentToCloud, cloudToAgent [32]byte
	// Binding is exporter output of its own label, which the cloud sends
	// and the agent checks; it reveals nothing of the secrets.
	Binding [sealedBindingLen]byte
}

// DeriveSealedKeys derives the sealed transport's keys from a TLS
// connection's state; it fails where the exporter is unavailable (TLS 1.2
// without extended master secret).
func DeriveSealedKeys(cs *tls.ConnectionState) (SealedKeys, error) {
	var k SealedKeys
	if cs == nil {
		return k, errors.New("sealed transport: not a TLS connection")
	}
	m, err := cs.ExportKeyingMaterial(sealedExporterLabel, nil, 64)
	if err != nil {
		return k, fmt.Errorf("sealed transport: %w", err)
	}
	b, err := cs.ExportKeyingMaterial(sealedBindingLabel, nil, sealedBindingLen)
	if err != nil {
		return k, fmt.Errorf("sealed transport: %w", err)
	}
	copy(k.agentToCloud[:], m[:32])
	copy(k.cloudToAgent[:], m[32:])
	copy(k.Binding[:], b)
	return k, nil
}

// BindingHeader is the value of SealedBindingHeader for these keys.
func (k SealedKeys) BindingHeader() string {
	return base64.RawURLEncoding.EncodeToString(k.Binding[:])
}

// CheckBinding compares a 101 response's SealedBindingHeader with the
// agent's own binding, in constant time.
func (k SealedKeys) CheckBinding(header string) error {
	got, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil || subtle.ConstantTimeCompare(got, k.Binding[:]) != 1 {
		return ErrSealedBinding
	}
	return nil
}

// sealDirection is one direction's key schedule: the AEAD of the current
// secret, its IV, and the number of the next record.
type sealDirection struct {
	secret [32]byte
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
}

func (d *sealDirection) init(secret [32]byte) error {
	d.secret = secret
	key, err := hkdf.Expand(sha256.New, d.secret[:], "gatehouse-tunnel/3 key", 16)
	if err != nil {
		return err
	}
	iv, err := hkdf.Expand(sha256.New, d.secret[:], "gatehouse-tunnel/3 iv", len(d.iv))
	if err != nil {
		return err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	if d.aead, err = cipher.NewGCM(block); err != nil {
		return err
	}
	copy(d.iv[:], iv)
	return nil
}

// nonce is the next record's nonce.
func (d *sealDirection) nonce() [12]byte {
	n := d.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], d.seq)
	subtle.XORBytes(n[4:], n[4:], s[:])
	return n
}

// advance counts a record and, every sealedRekeyRecords, moves to the next
// secret. The count never wraps: 2^64 records are out of reach.
func (d *sealDirection) advance() error {
	d.seq++
	if d.seq%sealedRekeyRecords != 0 {
		return nil
	}
	next, err := hkdf.Expand(sha256.New, d.secret[:], "gatehouse-tunnel/3 next", len(d.secret))
	if err != nil {
		return err
	}
	seq := d.seq
	if err := d.init([32]byte(next)); err != nil {
		return err
	}
	d.seq = seq
	return nil
}

// SealedConn is the sealed transport over nc, the connection under the
// upgraded TLS connection (which nothing may read or write any more); agent
// tells which end this is.
func SealedConn(nc net.Conn, keys SealedKeys, agent bool) (Conn, error) {
	c := &sealedConn{nc: nc, rw: nc, open: -1, closed: make(chan struct{})}
	if !agent {
		c.heard = make(chan struct{})
	}
	// The socket itself, read and written with raw system calls (see
	// sockio: every hop then starts without waking the runtime's
	// monitor thread), a batch in one writev.
	sock := plainConn(nc)
	if s := sockio.New(sock); s != nil {
		c.rw, c.writev = s, s.WriteBuffers
	} else if tc, ok := sock.(*net.TCPConn); ok {
		c.writev = func(b *net.Buffers) (int64, error) { return b.WriteTo(tc) }
	}
	out, in := keys.cloudToAgent, keys.agentToCloud
	if agent {
		out, in = in, out
	}
	if err := c.w.init(out); err != nil {
		return nil, fmt.Errorf("sealed transport: %w", err)
	}
	if err := c.r.init(in); err != nil {
		return nil, fmt.Errorf("sealed transport: %w", err)
	}
	return c, nil
}

type sealedConn struct {
	nc net.Conn
	// rw reads and writes nc's socket; writev, when not nil, writes a
	// batch in one system call.
	rw     io.ReadWriter
	writev func(*net.Buffers) (int64, error)

	// Reading (the reading goroutine's only).
	r sealDirection
	// pend holds bytes read past the last record: the next record's
	// length at least, once that has come. An idle session blocks reading
	// into it, holding no pooled buffer.
	pend [readAhead]byte
	pn   int
	// rec is the pooled buffer of the record being read out; plain its
	// frames not yet returned.
	rec   *[]byte
	plain []byte

	// Writing (under the session's writeMu).
	w sealDirection
	// out holds sealed records made of small frames, and open >= 0 is
	// where the record still taking frames begins in it.
	out  []byte
	open int
	// segs is the batch in order: spans of out, and pooled frames sealed
	// in place (ext), which the session keeps until endBatch.
	segs    []sealedSeg
	holding bool
	iov     net.Buffers

	// heard, on the cloud's side, is closed once the agent's first record
	// was read: the cloud writes nothing before. The agent's TLS reader,
	// reading the 101, could otherwise take the cloud's first record
	// for the TLS connection's own, and lose it.
	heard     chan struct{}
	heardSet  bool // the reader's: heard is closed
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// sealedSeg is a span of sealedConn.out, or a record outside it.
type sealedSeg struct {
	start, end int
	ext        []byte
}

var (
	_ Conn           = (*sealedConn)(nil)
	_ frameKeeper    = (*sealedConn)(nil)
	_ headroomWriter = (*sealedConn)(nil)
	_ frameBatcher   = (*sealedConn)(nil)
	_ pairWriter     = (*sealedConn)(nil)
)

func (c *sealedConn) watch(ctx context.Context) (stop func() bool) {
	if ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() { _ = c.Close() })
}

func (c *sealedConn) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (c *sealedConn) ReadMessage(ctx context.Context) ([]byte, error) {
	if len(c.plain) == 0 {
		if c.rec != nil {
			framePool.Put(c.rec)
			c.rec = nil
		}
		stop := c.watch(ctx)
		err := c.readRecord()
		stop()
		if err != nil {
			return nil, c.ctxErr(ctx, err)
		}
	}
	if len(c.plain) < rawHeaderLen {
		return nil, fmt.Errorf("%w: a record ends inside a frame's length", ErrProtocol)
	}
	n := binary.BigEndian.Uint32(c.plain)
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: empty frame", ErrProtocol)
	case n > MaxFrameSize:
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	case int(n) > len(c.plain)-rawHeaderLen:
		return nil, fmt.Errorf("%w: a frame crosses its record's end", ErrProtocol)
	}
	f := c.plain[rawHeaderLen : rawHeaderLen+n]
	c.plain = c.plain[rawHeaderLen+n:]
	return f, nil
}

// readRecord reads the next record into a pooled buffer and opens it there.
func (c *sealedConn) readRecord() error {
	for c.pn < recordHeaderLen {
		m, err := c.rw.Read(c.pend[c.pn:])
		c.pn += m
		if err != nil && c.pn < recordHeaderLen {
			return readErr(err, c.pn)
		}
	}
	n := int(binary.BigEndian.Uint32(c.pend[:]))
	switch {
	case n > maxRecordLen:
		return fmt.Errorf("%w: a record of %d bytes", ErrFrameTooLarge, n)
	case n <= sealTagLen:
		return fmt.Errorf("%w: a record of %d bytes", ErrProtocol, n)
	}
	total := recordHeaderLen + n
	bp := framePool.Get().(*[]byte)
	b := (*bp)[:cap(*bp)]
	have := copy(b, c.pend[:c.pn])
	for have < total {
		m, err := c.rw.Read(b[have:min(total+readAhead, len(b))])
		have += m
		if err != nil && have < total {
			framePool.Put(bp)
			return readErr(err, have)
		}
	}
	c.pn = copy(c.pend[:], b[total:have])
	nonce := c.r.nonce()
	plain, err := c.r.aead.Open(b[recordHeaderLen:recordHeaderLen], nonce[:], b[recordHeaderLen:total], b[:recordHeaderLen])
	if err != nil {
		framePool.Put(bp)
		return fmt.Errorf("%w: a sealed record failed authentication", ErrProtocol)
	}
	if err := c.r.advance(); err != nil {
		framePool.Put(bp)
		return err
	}
	*bp = b[:total]
	c.rec, c.plain = bp, plain
	if c.heard != nil && !c.heardSet {
		c.heardSet = true
		close(c.heard)
	}
	return nil
}

// readErr words a failed read: the end of the connection inside a record
// is not a clean end.
func readErr(err error, have int) error {
	if errors.Is(err, io.EOF) && have > 0 {
		return fmt.Errorf("%w: connection closed inside a record", io.ErrUnexpectedEOF)
	}
	return err
}

// keepFrame hands over the record's buffer when the frame last returned was
// its last one (the whole record, for a bulk Data frame, which its sender
// seals alone); the frames before it were read out already.
func (c *sealedConn) keepFrame() *[]byte {
	if len(c.plain) != 0 {
		return nil
	}
	f := c.rec
	c.rec = nil
	return f
}

// WriteMessage seals p as a record of its own, or adds it to the batch's
// open record.
func (c *sealedConn) WriteMessage(ctx context.Context, p []byte) error {
	if len(p) == 0 || len(p) > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(p))
	}
	if err := c.add(p); err != nil {
		return err
	}
	if c.holding {
		return nil
	}
	return c.flush(ctx)
}

// writePair seals the frames a and b in one record (see Session.writePair).
func (c *sealedConn) writePair(a, b []byte) error {
	for _, p := range [][]byte{a, b} {
		if len(p) == 0 || len(p) > MaxFrameSize {
			return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(p))
		}
	}
	if err := c.add(a); err != nil {
		return err
	}
	if err := c.add(b); err != nil {
		return err
	}
	if c.holding {
		return nil
	}
	return c.flush(context.Background())
}

// add copies frame p behind its length into the open record, sealing the
// open record first if p does not fit in it.
func (c *sealedConn) add(p []byte) error {
	if c.open >= 0 && len(c.out)-c.open-recordHeaderLen+rawHeaderLen+len(p) > maxRecordPlain {
		if err := c.seal(); err != nil {
			return err
		}
	}
	if c.open < 0 {
		c.open = len(c.out)
		c.out = append(c.out, 0, 0, 0, 0)
	}
	c.out = binary.BigEndian.AppendUint32(c.out, uint32(len(p)))
	c.out = append(c.out, p...)
	return nil
}

// seal seals the open record in place in out and closes it.
func (c *sealedConn) seal() error {
	if c.open < 0 {
		return nil
	}
	start := c.open
	c.open = -1
	body := start + recordHeaderLen
	n := len(c.out) - body
	binary.BigEndian.PutUint32(c.out[start:], uint32(n+sealTagLen))
	// Room for the tag, so that Seal writes in place within out.
	c.out = slices.Grow(c.out, sealTagLen)
	nonce := c.w.nonce()
	sealed := c.w.aead.Seal(c.out[body:body], nonce[:], c.out[body:body+n], c.out[start:body])
	return c.afterSeal(start, body+len(sealed))
}

// afterSeal records out[start:end] as the batch's next span.
func (c *sealedConn) afterSeal(start, end int) error {
	c.out = c.out[:end]
	if k := len(c.segs) - 1; k >= 0 && c.segs[k].ext == nil && c.segs[k].end == start {
		c.segs[k].end = end
	} else {
		c.segs = append(c.segs, sealedSeg{start: start, end: end})
	}
	return c.w.advance()
}

// writeWithHeadroom seals the frame buf[frameHeadroom:] in place, as a
// record of its own, in the room around it: the record's length and the
// frame's in front, the tag behind, within buf's capacity.
func (c *sealedConn) writeWithHeadroom(ctx context.Context, buf []byte) error {
	n := len(buf) - frameHeadroom
	if n <= 0 || n > MaxFrameSize || cap(buf)-len(buf) < sealTagLen {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	if err := c.seal(); err != nil {
		return err
	}
	plain := buf[recordHeaderLen:]
	binary.BigEndian.PutUint32(plain, uint32(n))
	binary.BigEndian.PutUint32(buf, uint32(len(plain)+sealTagLen))
	nonce := c.w.nonce()
	rec := buf[:recordHeaderLen+len(c.w.aead.Seal(plain[:0], nonce[:], plain, buf[:recordHeaderLen]))]
	if err := c.w.advance(); err != nil {
		return err
	}
	c.segs = append(c.segs, sealedSeg{ext: rec})
	if c.holding {
		return nil
	}
	return c.flush(ctx)
}

// holdsPooled reports that frames given to writeWithHeadroom during a batch
// are written at endBatch, from their own buffers: the session puts them
// back in framePool only after endBatch.
func (c *sealedConn) holdsPooled() bool { return true }

func (c *sealedConn) beginBatch() bool {
	c.holding = true
	return true
}

func (c *sealedConn) endBatch() error {
	c.holding = false
	return c.flush(context.Background())
}

// flush seals the open record and writes the batch: one write, a writev
// where the batch has records outside out and nc can take it.
func (c *sealedConn) flush(ctx context.Context) error {
	if err := c.seal(); err != nil {
		return err
	}
	if len(c.segs) == 0 {
		return nil
	}
	defer c.watch(ctx)()
	if c.heard != nil {
		select {
		case <-c.heard:
		case <-c.closed:
			return c.ctxErr(ctx, net.ErrClosed)
		}
	}
	var err error
	switch {
	case len(c.segs) == 1 && c.segs[0].ext != nil:
		_, err = c.rw.Write(c.segs[0].ext)
	case len(c.segs) == 1:
		_, err = c.rw.Write(c.out[c.segs[0].start:c.segs[0].end])
	case c.writev != nil:
		c.iov = c.iov[:0]
		for _, s := range c.segs {
			if s.ext != nil {
				c.iov = append(c.iov, s.ext)
			} else {
				c.iov = append(c.iov, c.out[s.start:s.end])
			}
		}
		iov := c.iov
		_, err = c.writev(&iov)
		clear(c.iov[:cap(c.iov)])
	default:
		// No writev under nc: the records go out in one write, copied
		// behind the spans of out.
		start := len(c.out)
		for _, s := range c.segs {
			if s.ext != nil {
				c.out = append(c.out, s.ext...)
			} else {
				c.out = append(c.out, c.out[s.start:s.end]...)
			}
		}
		_, err = c.rw.Write(c.out[start:])
	}
	c.segs = c.segs[:0]
	if cap(c.out) > sealedOutKeep {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
	c.open = -1
	if err != nil {
		return c.ctxErr(ctx, err)
	}
	return nil
}

func (c *sealedConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		if err := c.nc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.closeErr = err
		}
	})
	return c.closeErr
}

// plainConn unwraps connections that say what they wrap with NetConn
// (clienthello.Conn, after a peek) down to the socket, whose writev a sealed
// batch uses; not one that still has bytes to replay (Buffered). It unwraps
// a BatchConn too (the cluster link's, under its TLS): it holds nothing
// outside a batch, and the sealed transport batches by itself.
func plainConn(c net.Conn) net.Conn {
	for range 8 {
		if b, ok := c.(*BatchConn); ok {
			c = b.Conn
			continue
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		if b, ok := c.(interface{ Buffered() int }); ok && b.Buffered() > 0 {
			break
		}
		n := u.NetConn()
		if n == nil || n == c {
			break
		}
		c = n
	}
	return c
}
