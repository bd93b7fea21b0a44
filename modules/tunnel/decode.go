package tunnel

import (
	"encoding/binary"
	"fmt"
)

// Decode parses and validates one frame. It is strict: unknown types, unknown
// or duplicate keys, missing required keys, wrong msgpack types, out-of-range
// numbers, oversized fields and trailing bytes are errors wrapping
// ErrProtocol. It accepts the keys in any order and any width of integer,
// string, bin and map header, as a generic msgpack encoder on the peer may
// produce them. The Data field of a decoded Data aliases b: the payload is
// not copied.
func Decode(b []byte) (Message, error) {
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(b))
	}
	if len(b) == 0 {
		return nil, invalid("empty frame")
	}
	msg, err := decodeAs(MessageType(b[0]), b[1:])
	if err != nil {
		return nil, err
	}
	if err := msg.validate(); err != nil {
		return nil, err
	}
	return msg, nil
}

// decodeAs decodes the payload p of a frame of type t into its message.
func decodeAs(t MessageType, p []byte) (Message, error) {
	switch t {
	case TypeHandshake:
		return decodeInto[Handshake](handshakeSchema, p)
	case TypeInitiator:
		return decodeInto[Initiator](initiatorSchema, p)
	case TypeData:
		return decodeInto[Data](dataSchema, p)
	case TypeTerminator:
		return decodeInto[Terminator](terminatorSchema, p)
	case TypeWindow:
		return decodeInto[Window](windowSchema, p)
	case TypePing:
		return decodeInto[Ping](pingSchema, p)
	case TypePong:
		return decodeInto[Pong](pongSchema, p)
	case TypeAck:
		return decodeInto[Ack](ackSchema, p)
	}
	return nil, invalid("unknown message type %v", t)
}

func decodeInto[M Message](s *schema[M], p []byte) (Message, error) {
	m, err := s.decode(p)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// decodeData is Decode for the session's hot path: a Data frame, validated,
// its payload aliasing b, without allocating.
func decodeData(b []byte) (GUID, []byte, error) {
	var g GUID
	if len(b) > MaxFrameSize {
		return g, nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(b))
	}
	if len(b) == 0 || MessageType(b[0]) != TypeData {
		return g, nil, invalid("not a data frame")
	}
	d, err := dataSchema.decode(b[1:])
	if err != nil {
		return g, nil, err
	}
	if err := d.validate(); err != nil {
		return d.GUID, nil, err
	}
	return d.GUID, d.Data, nil
}

// decodeInitiator is Decode for an Initiator frame, as the session's
// reader takes one per new stream: the message is not boxed in a Message
// only to be unboxed again.
func decodeInitiator(b []byte) (Initiator, error) {
	if len(b) > MaxFrameSize {
		return Initiator{}, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(b))
	}
	if len(b) == 0 || MessageType(b[0]) != TypeInitiator {
		return Initiator{}, invalid("not an initiator frame")
	}
	m, err := initiatorSchema.decode(b[1:])
	if err == nil {
		err = m.validate()
	}
	if err != nil {
		return Initiator{}, err
	}
	return m, nil
}

// decode reads a whole payload map into a message of the type s
// describes.
func (s *schema[M]) decode(b []byte) (M, error) {
	var m M
	r := reader{b: b}
	n, err := r.mapLen()
	if err != nil {
		return m, err
	}
	var seen uint
	for range n {
		k, err := r.key()
		if err != nil {
			return m, err
		}
		i := s.index(k)
		if i < 0 {
			return m, invalid("unknown key %q", k)
		}
		if err := r.once(&seen, 1<<i, k); err != nil {
			return m, err
		}
		// The value is read here rather than in a helper so that m is
		// copied only into and out of the one setter call.
		f := &s.fields[i]
		switch f.kind {
		case kindStr:
			var v string
			if v, err = r.str(int(f.max)); err == nil {
				m = f.str.set(m, v)
			}
		case kindBin:
			var v []byte
			if v, err = r.bin(int(f.max)); err == nil {
				m = f.bin.set(m, v)
			}
		case kindGUID:
			var v GUID
			if v, err = r.guid(); err == nil {
				m = f.guid.set(m, v)
			}
		case kindBool:
			var v bool
			if v, err = r.bool(); err == nil {
				m = f.flag.set(m, v)
			}
		default:
			var v uint64
			if v, err = r.uint(f.max); err == nil {
				m = f.uint.set(m, v)
			}
		}
		if err != nil {
			return m, err
		}
	}
	if seen&s.required != s.required {
		return m, invalid("missing required keys")
	}
	return m, r.end()
}

// index is the position of key k in s, -1 if s has no such key. The
// comparison string(k) == name does not allocate.
func (s *schema[M]) index(k []byte) int {
	for i := range s.fields {
		// Length and first byte first: most keys differ there, and the
		// full comparison is a call.
		name := s.fields[i].name
		if len(name) == len(k) && len(k) > 0 && name[0] == k[0] && string(k) == name {
			return i
		}
	}
	return -1
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
	case c&0xf0 == mpFixMap:
		n = int(c & 0x0f)
	case c == mpMap16:
		n, err = r.length(2)
	case c == mpMap32:
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
	case c&0xe0 == mpFixStr:
		return int(c & 0x1f), nil
	case c == mpStr8:
		return r.length(1)
	case c == mpStr16:
		return r.length(2)
	case c == mpStr32:
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
	if n > maxKeyNameLen {
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
	case mpBin8:
		n, err = r.length(1)
	case mpBin16:
		n, err = r.length(2)
	case mpBin32:
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
	case mpTrue:
		return true, nil
	case mpFalse:
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
	case c <= mpPosFixIntMax:
		v = uint64(c)
	case c == mpUint8 || c == mpInt8:
		p, err := r.next(1)
		if err != nil {
			return 0, err
		}
		if c == mpInt8 && p[0]&0x80 != 0 {
			return 0, invalid("negative integer")
		}
		v = uint64(p[0])
	case c == mpUint16 || c == mpInt16:
		p, err := r.next(2)
		if err != nil {
			return 0, err
		}
		if c == mpInt16 && p[0]&0x80 != 0 {
			return 0, invalid("negative integer")
		}
		v = uint64(binary.BigEndian.Uint16(p))
	case c == mpUint32 || c == mpInt32:
		p, err := r.next(4)
		if err != nil {
			return 0, err
		}
		if c == mpInt32 && p[0]&0x80 != 0 {
			return 0, invalid("negative integer")
		}
		v = uint64(binary.BigEndian.Uint32(p))
	case c == mpUint64 || c == mpInt64:
		p, err := r.next(8)
		if err != nil {
			return 0, err
		}
		if c == mpInt64 && p[0]&0x80 != 0 {
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
