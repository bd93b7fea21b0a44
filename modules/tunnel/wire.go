package tunnel

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

const guidLen = 16

// GUID identifies a stream within a session. It is 16 random bytes chosen by
// the side that opens the stream (so both sides open streams without
// coordinating), sent as msgpack bin of length 16. The zero GUID is reserved
// for session-level Acks.
type GUID [guidLen]byte

// NewGUID returns a random GUID, never the zero one.
func NewGUID() GUID {
	var g GUID
	for g.IsZero() {
		// crypto/rand.Read never fails since Go 1.24.
		_, _ = rand.Read(g[:])
	}
	return g
}

// IsZero reports whether g is the reserved zero GUID. It also makes the
// msgpack encoder omit a zero GUID tagged omitempty.
func (g GUID) IsZero() bool { return g == GUID{} }

// String returns g in hex, for logs.
func (g GUID) String() string { return hex.EncodeToString(g[:]) }

// EncodeMsgpack writes g as bin 16.
func (g GUID) EncodeMsgpack(e *msgpack.Encoder) error { return e.EncodeBytes(g[:]) }

// Message is one of the protocol messages: Handshake, Initiator, Data,
// Terminator, Window, Ping, Pong or Ack.
type Message interface {
	Type() MessageType
	validate() error
}

// Handshake is the first frame an agent sends; the cloud answers with an Ack.
type Handshake struct {
	// Name is the gateway's name.
	Name string `msgpack:"Name"`
	// Key is the gateway's token. It is a secret: never log it.
	Key string `msgpack:"Key"`
	// Version is the protocol version the agent speaks (ProtocolVersion).
	Version uint16 `msgpack:"Version"`
}

// Initiator opens a stream. The receiver answers with an Ack carrying the
// same GUID.
type Initiator struct {
	// GUID names the new stream. Session.Open fills it.
	GUID GUID `msgpack:"GUID"`
	// Ip and Port are the destination the stream is for, when it has one
	// (agent-to-agent forwarding); empty and zero for ingress TLS.
	Ip   string `msgpack:"Ip"`
	Port uint16 `msgpack:"Port"`
	// Gatename is the gateway the stream is for.
	Gatename string `msgpack:"Gatename"`
	// ClientAddr is the address (ip:port) of the original client, for
	// PROXY protocol headers and logs; empty when unknown.
	ClientAddr string `msgpack:"ClientAddr,omitempty"`
	// Window is the opener's receive window for this stream, that is the
	// acceptor's initial send credit; 0 means DefaultWindow. Session.Open
	// fills it from Config.StreamWindow.
	Window uint32 `msgpack:"Window,omitempty"`
}

// Data carries stream bytes. It consumes as much send credit as len(Data).
type Data struct {
	GUID GUID   `msgpack:"GUID"`
	Data []byte `msgpack:"Data"`
}

// Terminator ends a stream. With Half set it means "no more data from me"
// (the receiver reads EOF after the data already sent, and may keep writing);
// without it, the sender also stops reading, so the receiver's writes fail.
type Terminator struct {
	GUID GUID `msgpack:"GUID"`
	Half bool `msgpack:"Half,omitempty"`
}

// Window grants the peer Credit more bytes of Data on the stream. A receiver
// sends it once the application has consumed half of its window.
type Window struct {
	GUID   GUID   `msgpack:"GUID"`
	Credit uint32 `msgpack:"Credit"`
}

// Ping asks for a Pong with the same Nonce. Each side pings every
// KeepAliveInterval, measures the round trip from the matching Pong, and
// treats KeepAliveTimeout without any frame from the peer as a dead peer.
type Ping struct {
	Nonce uint64 `msgpack:"Nonce"`
}

// Pong answers a Ping with its Nonce.
type Pong struct {
	Nonce uint64 `msgpack:"Nonce"`
}

// Ack answers a Handshake (zero GUID) or an Initiator (its GUID). With the
// zero GUID after the handshake, Ok false means the sender is closing the
// session and Message says why.
type Ack struct {
	Ok      bool   `msgpack:"Ok"`
	Message string `msgpack:"Message,omitempty"`
	GUID    GUID   `msgpack:"GUID,omitempty"`
	// Window is the acceptor's receive window for the stream (the opener's
	// initial send credit); 0 means DefaultWindow.
	Window uint32 `msgpack:"Window,omitempty"`
}

func (Handshake) Type() MessageType  { return TypeHandshake }
func (Initiator) Type() MessageType  { return TypeInitiator }
func (Data) Type() MessageType       { return TypeData }
func (Terminator) Type() MessageType { return TypeTerminator }
func (Window) Type() MessageType     { return TypeWindow }
func (Ping) Type() MessageType       { return TypePing }
func (Pong) Type() MessageType       { return TypePong }
func (Ack) Type() MessageType        { return TypeAck }

var errInvalid = fmt.Errorf("%w: invalid message", ErrProtocol)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

func (m Handshake) validate() error {
	if m.Name == "" || len(m.Name) > maxNameLen {
		return invalid("handshake name must have 1 to %d bytes", maxNameLen)
	}
	if m.Key == "" || len(m.Key) > maxKeyLen {
		return invalid("handshake key must have 1 to %d bytes", maxKeyLen)
	}
	if m.Version == 0 {
		return invalid("handshake version 0")
	}
	return nil
}

func (m Initiator) validate() error {
	if m.GUID.IsZero() {
		return invalid("initiator with zero GUID")
	}
	if m.Ip != "" {
		if len(m.Ip) > maxAddrLen {
			return invalid("initiator ip too long")
		}
		if _, err := netip.ParseAddr(m.Ip); err != nil {
			return invalid("initiator ip: %v", err)
		}
	}
	if len(m.Gatename) > maxGatenameLen {
		return invalid("initiator gatename too long")
	}
	if m.ClientAddr != "" {
		if len(m.ClientAddr) > maxAddrLen {
			return invalid("initiator client address too long")
		}
		if _, err := netip.ParseAddrPort(m.ClientAddr); err != nil {
			return invalid("initiator client address: %v", err)
		}
	}
	return validWindow(m.Window)
}

func validWindow(w uint32) error {
	if w != 0 && (w < MinWindow || w > MaxWindow) {
		return invalid("window %d outside [%d, %d]", w, MinWindow, MaxWindow)
	}
	return nil
}

func (m Data) validate() error {
	if m.GUID.IsZero() {
		return invalid("data with zero GUID")
	}
	if len(m.Data) == 0 || len(m.Data) > MaxDataSize {
		return invalid("data payload must have 1 to %d bytes", MaxDataSize)
	}
	return nil
}

func (m Terminator) validate() error {
	if m.GUID.IsZero() {
		return invalid("terminator with zero GUID")
	}
	return nil
}

func (m Window) validate() error {
	if m.GUID.IsZero() {
		return invalid("window with zero GUID")
	}
	if m.Credit == 0 || m.Credit > MaxWindow {
		return invalid("window credit must be 1 to %d", MaxWindow)
	}
	return nil
}

func (Ping) validate() error { return nil }
func (Pong) validate() error { return nil }

func (m Ack) validate() error {
	if len(m.Message) > maxMessageLen {
		return invalid("ack message longer than %d bytes", maxMessageLen)
	}
	if m.GUID.IsZero() && m.Window != 0 {
		return invalid("session ack with a window")
	}
	return validWindow(m.Window)
}

var encoderPool = sync.Pool{New: func() any {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	return &pooledEncoder{buf: &buf, enc: enc}
}}

type pooledEncoder struct {
	buf *bytes.Buffer
	enc *msgpack.Encoder
}

// Encode returns the frame for msg, after checking that it is valid (the
// same rules Decode applies).
func Encode(msg Message) ([]byte, error) {
	return AppendEncode(nil, msg)
}

// AppendEncode appends the frame for msg to dst.
func AppendEncode(dst []byte, msg Message) ([]byte, error) {
	if msg == nil {
		return dst, errors.New("encode nil message")
	}
	if err := msg.validate(); err != nil {
		return dst, err
	}
	if d, ok := msg.(Data); ok {
		return AppendData(dst, d.GUID, d.Data), nil
	}
	if d, ok := msg.(*Data); ok {
		return AppendData(dst, d.GUID, d.Data), nil
	}
	pe := encoderPool.Get().(*pooledEncoder)
	defer encoderPool.Put(pe)
	pe.buf.Reset()
	pe.buf.WriteByte(byte(msg.Type()))
	if err := pe.enc.Encode(msg); err != nil {
		return dst, fmt.Errorf("encode %v: %w", msg.Type(), err)
	}
	if pe.buf.Len() > MaxFrameSize {
		return dst, fmt.Errorf("%w: %v of %d bytes", ErrFrameTooLarge, msg.Type(), pe.buf.Len())
	}
	return append(dst, pe.buf.Bytes()...), nil
}

// AppendData appends a Data frame to dst without reflection, for the
// throughput path. The caller keeps 1 <= len(p) <= MaxDataSize and g non-zero.
func AppendData(dst []byte, g GUID, p []byte) []byte {
	dst = append(dst, byte(TypeData), msgpcode.FixedMapLow|2,
		msgpcode.FixedStrLow|4, 'G', 'U', 'I', 'D', msgpcode.Bin8, guidLen)
	dst = append(dst, g[:]...)
	dst = append(dst, msgpcode.FixedStrLow|4, 'D', 'a', 't', 'a')
	if len(p) <= 0xff {
		dst = append(dst, msgpcode.Bin8, byte(len(p)))
	} else {
		dst = append(dst, msgpcode.Bin16, byte(len(p)>>8), byte(len(p)))
	}
	return append(dst, p...)
}

// Decode parses and validates one frame. It is strict: unknown types, unknown
// or duplicate keys, missing required keys, wrong msgpack types, out-of-range
// numbers, oversized fields and trailing bytes are errors wrapping
// ErrProtocol. The Data field of a decoded Data aliases b.
func Decode(b []byte) (Message, error) {
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(b))
	}
	if len(b) == 0 {
		return nil, invalid("empty frame")
	}
	var (
		msg Message
		err error
	)
	switch t := MessageType(b[0]); t {
	case TypeData:
		var d Data
		d.GUID, d.Data, err = decodeData(b)
		msg = d
	case TypeHandshake:
		msg, err = decodeHandshake(b[1:])
	case TypeInitiator:
		msg, err = decodeInitiator(b[1:])
	case TypeTerminator:
		msg, err = decodeTerminator(b[1:])
	case TypeWindow:
		msg, err = decodeWindow(b[1:])
	case TypePing:
		var n uint64
		n, err = decodeNonce(b[1:])
		msg = Ping{Nonce: n}
	case TypePong:
		var n uint64
		n, err = decodeNonce(b[1:])
		msg = Pong{Nonce: n}
	case TypeAck:
		msg, err = decodeAck(b[1:])
	default:
		return nil, invalid("unknown message type %v", t)
	}
	if err != nil {
		return nil, err
	}
	if err := msg.validate(); err != nil {
		return nil, err
	}
	return msg, nil
}

// decodeData is Decode's fast path for Data frames; the payload aliases b.
// It accepts the keys in either order and any bin width, as a generic msgpack
// encoder on the peer may produce them.
func decodeData(b []byte) (GUID, []byte, error) {
	var (
		g    GUID
		data []byte
		seen uint
	)
	r := reader{b: b[1:]}
	n, err := r.mapLen()
	if err != nil {
		return g, nil, err
	}
	if n != 2 {
		return g, nil, invalid("data frame with %d keys", n)
	}
	for range n {
		k, err := r.key()
		if err != nil {
			return g, nil, err
		}
		switch string(k) {
		case "GUID":
			err = r.once(&seen, 1, k)
			if err == nil {
				g, err = r.guid()
			}
		case "Data":
			err = r.once(&seen, 2, k)
			if err == nil {
				data, err = r.bin(MaxDataSize)
			}
		default:
			err = invalid("data frame with key %q", k)
		}
		if err != nil {
			return g, nil, err
		}
	}
	if err := r.end(); err != nil {
		return g, nil, err
	}
	if g.IsZero() || len(data) == 0 {
		return g, nil, invalid("data frame without GUID or payload")
	}
	return g, data, nil
}

func decodeHandshake(b []byte) (Handshake, error) {
	var m Handshake
	err := decodeMap(b, 1|2|4, func(r *reader, k []byte) (uint, error) {
		var err error
		switch string(k) {
		case "Name":
			m.Name, err = r.str(maxNameLen)
			return 1, err
		case "Key":
			m.Key, err = r.str(maxKeyLen)
			return 2, err
		case "Version":
			var v uint64
			v, err = r.uint(0xffff)
			m.Version = uint16(v)
			return 4, err
		}
		return 0, nil
	})
	return m, err
}

func decodeInitiator(b []byte) (Initiator, error) {
	var m Initiator
	err := decodeMap(b, 1, func(r *reader, k []byte) (uint, error) {
		var (
			err error
			v   uint64
		)
		switch string(k) {
		case "GUID":
			m.GUID, err = r.guid()
			return 1, err
		case "Ip":
			m.Ip, err = r.str(maxAddrLen)
			return 2, err
		case "Port":
			v, err = r.uint(0xffff)
			m.Port = uint16(v)
			return 4, err
		case "Gatename":
			m.Gatename, err = r.str(maxGatenameLen)
			return 8, err
		case "ClientAddr":
			m.ClientAddr, err = r.str(maxAddrLen)
			return 16, err
		case "Window":
			v, err = r.uint(MaxWindow)
			m.Window = uint32(v)
			return 32, err
		}
		return 0, nil
	})
	return m, err
}

func decodeTerminator(b []byte) (Terminator, error) {
	var m Terminator
	err := decodeMap(b, 1, func(r *reader, k []byte) (uint, error) {
		var err error
		switch string(k) {
		case "GUID":
			m.GUID, err = r.guid()
			return 1, err
		case "Half":
			m.Half, err = r.bool()
			return 2, err
		}
		return 0, nil
	})
	return m, err
}

func decodeWindow(b []byte) (Window, error) {
	var m Window
	err := decodeMap(b, 1|2, func(r *reader, k []byte) (uint, error) {
		var err error
		switch string(k) {
		case "GUID":
			m.GUID, err = r.guid()
			return 1, err
		case "Credit":
			var v uint64
			v, err = r.uint(MaxWindow)
			m.Credit = uint32(v)
			return 2, err
		}
		return 0, nil
	})
	return m, err
}

func decodeNonce(b []byte) (uint64, error) {
	var n uint64
	err := decodeMap(b, 1, func(r *reader, k []byte) (uint, error) {
		var err error
		if string(k) == "Nonce" {
			n, err = r.uint(^uint64(0))
			return 1, err
		}
		return 0, nil
	})
	return n, err
}

func decodeAck(b []byte) (Ack, error) {
	var m Ack
	err := decodeMap(b, 1, func(r *reader, k []byte) (uint, error) {
		var err error
		switch string(k) {
		case "Ok":
			m.Ok, err = r.bool()
			return 1, err
		case "Message":
			m.Message, err = r.str(maxMessageLen)
			return 2, err
		case "GUID":
			m.GUID, err = r.guid()
			return 4, err
		case "Window":
			var v uint64
			v, err = r.uint(MaxWindow)
			m.Window = uint32(v)
			return 8, err
		}
		return 0, nil
	})
	return m, err
}

// decodeMap reads a whole payload map. field decodes the value of key k and
// returns the key's bit (0 for an unknown key); required is the set of bits
// that must be present.
func decodeMap(b []byte, required uint, field func(r *reader, k []byte) (uint, error)) error {
	r := reader{b: b}
	n, err := r.mapLen()
	if err != nil {
		return err
	}
	var seen uint
	for range n {
		k, err := r.key()
		if err != nil {
			return err
		}
		bit, err := field(&r, k)
		if err != nil {
			return err
		}
		if bit == 0 {
			return invalid("unknown key %q", k)
		}
		if err := r.once(&seen, bit, k); err != nil {
			return err
		}
	}
	if seen&required != required {
		return invalid("missing required keys")
	}
	return r.end()
}

// reader is a strict msgpack reader over a byte slice. It accepts only the
// types the protocol uses, and never allocates more than the input holds.
type reader struct {
	b []byte
}

var errShort = invalid("truncated msgpack")

func (r *reader) next(n int) ([]byte, error) {
	if n < 0 || n > len(r.b) {
		return nil, errShort
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p, nil
}

func (r *reader) code() (byte, error) {
	p, err := r.next(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

func (r *reader) end() error {
	if len(r.b) != 0 {
		return invalid("%d trailing bytes", len(r.b))
	}
	return nil
}

func (r *reader) once(seen *uint, bit uint, k []byte) error {
	if *seen&bit != 0 {
		return invalid("duplicate key %q", k)
	}
	*seen |= bit
	return nil
}

// length reads a big-endian length of size bytes.
func (r *reader) length(size int) (int, error) {
	p, err := r.next(size)
	if err != nil {
		return 0, err
	}
	switch size {
	case 1:
		return int(p[0]), nil
	case 2:
		return int(binary.BigEndian.Uint16(p)), nil
	default:
		v := binary.BigEndian.Uint32(p)
		if v > MaxFrameSize {
			return 0, errShort
		}
		return int(v), nil
	}
}

func (r *reader) mapLen() (int, error) {
	c, err := r.code()
	if err != nil {
		return 0, err
	}
	var n int
	switch {
	case msgpcode.IsFixedMap(c):
		n = int(c & msgpcode.FixedMapMask)
	case c == msgpcode.Map16:
		n, err = r.length(2)
	case c == msgpcode.Map32:
		n, err = r.length(4)
	default:
		return 0, invalid("payload is not a map (code %#02x)", c)
	}
	if err != nil {
		return 0, err
	}
	// Every entry takes at least two bytes; a larger count is a lie.
	if n > len(r.b)/2 {
		return 0, errShort
	}
	return n, nil
}

func (r *reader) strLen() (int, error) {
	c, err := r.code()
	if err != nil {
		return 0, err
	}
	switch {
	case msgpcode.IsFixedString(c):
		return int(c & msgpcode.FixedStrMask), nil
	case c == msgpcode.Str8:
		return r.length(1)
	case c == msgpcode.Str16:
		return r.length(2)
	case c == msgpcode.Str32:
		return r.length(4)
	}
	return 0, invalid("expected a string (code %#02x)", c)
}

// key reads a map key. It stays a []byte so that callers can switch on
// string(k), which the compiler does without allocating.
func (r *reader) key() ([]byte, error) {
	n, err := r.strLen()
	if err != nil {
		return nil, err
	}
	if n > 16 {
		return nil, invalid("key of %d bytes", n)
	}
	return r.next(n)
}

func (r *reader) str(max int) (string, error) {
	n, err := r.strLen()
	if err != nil {
		return "", err
	}
	if n > max {
		return "", invalid("string of %d bytes, at most %d allowed", n, max)
	}
	p, err := r.next(n)
	if err != nil {
		return "", err
	}
	return string(p), nil
}

func (r *reader) bin(max int) ([]byte, error) {
	c, err := r.code()
	if err != nil {
		return nil, err
	}
	var n int
	switch c {
	case msgpcode.Bin8:
		n, err = r.length(1)
	case msgpcode.Bin16:
		n, err = r.length(2)
	case msgpcode.Bin32:
		n, err = r.length(4)
	default:
		return nil, invalid("expected bin (code %#02x)", c)
	}
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, invalid("bin of %d bytes, at most %d allowed", n, max)
	}
	return r.next(n)
}

func (r *reader) guid() (GUID, error) {
	var g GUID
	p, err := r.bin(guidLen)
	if err != nil {
		return g, err
	}
	if len(p) != guidLen {
		return g, invalid("GUID of %d bytes", len(p))
	}
	copy(g[:], p)
	return g, nil
}

func (r *reader) bool() (bool, error) {
	c, err := r.code()
	if err != nil {
		return false, err
	}
	switch c {
	case msgpcode.True:
		return true, nil
	case msgpcode.False:
		return false, nil
	}
	return false, invalid("expected a bool (code %#02x)", c)
}

// uint reads a non-negative integer in any msgpack width, at most max.
func (r *reader) uint(max uint64) (uint64, error) {
	c, err := r.code()
	if err != nil {
		return 0, err
	}
	var v uint64
	switch {
	case c <= msgpcode.PosFixedNumHigh:
		v = uint64(c)
	case c == msgpcode.Uint8 || c == msgpcode.Int8:
		p, err := r.next(1)
		if err != nil {
			return 0, err
		}
		if c == msgpcode.Int8 && p[0]&0x80 != 0 {
			return 0, invalid("negative integer")
		}
		v = uint64(p[0])
	case c == msgpcode.Uint16 || c == msgpcode.Int16:
		p, err := r.next(2)
		if err != nil {
			return 0, err
		}
		if c == msgpcode.Int16 && p[0]&0x80 != 0 {
			return 0, invalid("negative integer")
		}
		v = uint64(binary.BigEndian.Uint16(p))
	case c == msgpcode.Uint32 || c == msgpcode.Int32:
		p, err := r.next(4)
		if err != nil {
			return 0, err
		}
		if c == msgpcode.Int32 && p[0]&0x80 != 0 {
			return 0, invalid("negative integer")
		}
		v = uint64(binary.BigEndian.Uint32(p))
	case c == msgpcode.Uint64 || c == msgpcode.Int64:
		p, err := r.next(8)
		if err != nil {
			return 0, err
		}
		if c == msgpcode.Int64 && p[0]&0x80 != 0 {
			return 0, invalid("negative integer")
		}
		v = binary.BigEndian.Uint64(p)
	default:
		return 0, invalid("expected an unsigned integer (code %#02x)", c)
	}
	if v > max {
		return 0, invalid("integer %d above %d", v, max)
	}
	return v, nil
}
