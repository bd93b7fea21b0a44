package tunnel

import (
	"errors"
	"fmt"
)

// The msgpack codes this package writes and reads (msgpack spec,
// https://github.com/msgpack/msgpack/blob/master/spec.md).
const (
	mpPosFixIntMax = 0x7f
	mpFixMap       = 0x80 // | count, up to 15
	mpFixStr       = 0xa0 // | length, up to 31
	mpFalse        = 0xc2
	mpTrue         = 0xc3
	mpBin8         = 0xc4
	mpBin16        = 0xc5
	mpBin32        = 0xc6
	mpUint8        = 0xcc
	mpUint16       = 0xcd
	mpUint32       = 0xce
	mpUint64       = 0xcf
	mpInt8         = 0xd0
	mpInt16        = 0xd1
	mpInt32        = 0xd2
	mpInt64        = 0xd3
	mpStr8         = 0xd9
	mpStr16        = 0xda
	mpStr32        = 0xdb
	mpMap16        = 0xde
	mpMap32        = 0xdf
)

// Encode returns the frame for msg, after checking that it is valid (the
// same rules Decode applies).
func Encode(msg Message) ([]byte, error) {
	if m, ok := msg.(Initiator); ok {
		return initiatorFrame(m, false)
	}
	return AppendEncode(nil, msg)
}

// AppendEncode appends the frame for msg to dst.
func AppendEncode(dst []byte, msg Message) ([]byte, error) {
	if msg == nil {
		return dst, errors.New("encode nil message")
	}
	if m, ok := msg.(Initiator); ok {
		// Validated there, and its frame always fits (initiatorSize).
		return encodeInitiator(dst, m, false)
	}
	if err := msg.validate(); err != nil {
		return dst, err
	}
	start := len(dst)
	switch m := msg.(type) {
	case Data:
		return AppendData(dst, m.GUID, m.Data), nil
	case *Data:
		return AppendData(dst, m.GUID, m.Data), nil
	case Handshake:
		dst = handshakeSchema.append(dst, m.Type(), m)
	case Terminator:
		dst = terminatorSchema.append(dst, m.Type(), m)
	case Window:
		dst = windowSchema.append(dst, m.Type(), m)
	case Ping:
		dst = pingSchema.append(dst, m.Type(), m)
	case Pong:
		dst = pongSchema.append(dst, m.Type(), m)
	case Ack:
		dst = ackSchema.append(dst, m.Type(), m)
	default: // Initiator is handled above.
		return dst, fmt.Errorf("encode %T: not a message of this package", msg)
	}
	if n := len(dst) - start; n > MaxFrameSize {
		return dst[:start], fmt.Errorf("%w: %v of %d bytes", ErrFrameTooLarge, msg.Type(), n)
	}
	return dst, nil
}

// initiatorFrame is Encode(m) without boxing m in a Message, in one
// allocation of the exact size: the cloud encodes one per new connection,
// on a cold path where every growth of the slice is an allocation and a
// copy. typedAddrs is encodeInitiator's.
func initiatorFrame(m Initiator, typedAddrs bool) ([]byte, error) {
	b, err := encodeInitiator(make([]byte, 0, initiatorSize(m)), m, typedAddrs)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// encodeInitiator validates m and appends its frame to dst: the bytes of
// initiatorSchema.append written out by hand, since every new stream
// costs one and the table's accessors are an indirect call per key on a
// path that is cold (the cloud sends one per new connection). The table
// stays the definition: TestInitiatorFastPath and FuzzDecode compare the
// two on every Initiator they make, and the golden frames pin both.
//
// typedAddrs says that m's addresses were formatted from typed ones in a
// form that parses back (Meta.initiator), so they are not parsed again.
func encodeInitiator(dst []byte, m Initiator, typedAddrs bool) ([]byte, error) {
	err := m.validateBounds()
	if err == nil && !typedAddrs {
		err = m.validateAddrs()
	}
	if err != nil {
		return dst, err
	}
	n := byte(4)
	if m.ClientAddr != "" {
		n++
	}
	if m.Window != 0 {
		n++
	}
	if m.Source != "" {
		n++
	}
	dst = append(dst, byte(TypeInitiator), mpFixMap|n,
		mpFixStr|4, 'G', 'U', 'I', 'D', mpBin8, guidLen)
	dst = append(dst, m.GUID[:]...)
	dst = appendStr(append(dst, mpFixStr|2, 'I', 'p'), m.Ip)
	dst = appendUint(append(dst, mpFixStr|4, 'P', 'o', 'r', 't'), uint64(m.Port))
	dst = appendStr(append(dst, mpFixStr|8, 'G', 'a', 't', 'e', 'n', 'a', 'm', 'e'), m.Gatename)
	if m.ClientAddr != "" {
		dst = appendStr(append(dst, mpFixStr|10, 'C', 'l', 'i', 'e', 'n', 't', 'A', 'd', 'd', 'r'), m.ClientAddr)
	}
	if m.Window != 0 {
		dst = appendUint(append(dst, mpFixStr|6, 'W', 'i', 'n', 'd', 'o', 'w'), uint64(m.Window))
	}
	if m.Source != "" {
		dst = appendStr(append(dst, mpFixStr|6, 'S', 'o', 'u', 'r', 'c', 'e'), m.Source)
	}
	return dst, nil
}

// initiatorSize is the length of m's frame. With the bounds validate
// enforces it stays under 700 bytes, far below MaxFrameSize.
func initiatorSize(m Initiator) int {
	n := 2 + (1 + 4 + 2 + guidLen) + (1 + 2 + strSize(m.Ip)) + (1 + 4 + uintSize(uint64(m.Port))) +
		(1 + 8 + strSize(m.Gatename))
	if m.ClientAddr != "" {
		n += 1 + 10 + strSize(m.ClientAddr)
	}
	if m.Window != 0 {
		n += 1 + 6 + uintSize(uint64(m.Window))
	}
	if m.Source != "" {
		n += 1 + 6 + strSize(m.Source)
	}
	return n
}

// strSize is the length appendStr writes for s.
func strSize(s string) int {
	switch n := len(s); {
	case n <= 31:
		return 1 + n
	case n <= 0xff:
		return 2 + n
	case n <= 0xffff:
		return 3 + n
	default:
		return 5 + n
	}
}

// uintSize is the length appendUint writes for v.
func uintSize(v uint64) int {
	switch {
	case v <= mpPosFixIntMax:
		return 1
	case v <= 0xff:
		return 2
	case v <= 0xffff:
		return 3
	case v <= 0xffffffff:
		return 5
	}
	return 9
}

// AppendData appends a Data frame to dst, for the throughput path: no
// validation and no allocation beyond growing dst. The caller keeps
// 1 <= len(p) <= MaxDataSize and g non-zero. The frame is
//
//	0x03 0x82 0xa4 "GUID" 0xc4 0x10 <16 bytes> 0xa4 "Data" <bin8|bin16 header> <payload>
func AppendData(dst []byte, g GUID, p []byte) []byte {
	return dataSchema.append(dst, TypeData, Data{GUID: g, Data: p})
}

// append writes the frame of m, of type t: the type byte, then the payload map with
// s's keys in order, leaving out empty omitEmpty keys. It writes each
// field in one pass and fills in the map's count after, so each accessor
// is called once per frame (a schema has at most 15 keys, so the count
// always fits the one-byte fixmap header written first).
func (s *schema[M]) append(dst []byte, t MessageType, m M) []byte {
	dst = append(dst, byte(t), mpFixMap)
	header := len(dst) - 1
	n := 0
	for i := range s.fields {
		f := &s.fields[i]
		omit := f.presence == omitEmpty
		switch f.kind {
		case kindStr:
			if v := f.str.get(m); !omit || v != "" {
				dst = appendStr(appendStr(dst, f.name), v)
				n++
			}
		case kindBin:
			if v := f.bin.get(m); !omit || len(v) != 0 {
				dst = appendBin(appendStr(dst, f.name), v)
				n++
			}
		case kindGUID:
			if v := f.guid.get(m); !omit || !v.IsZero() {
				dst = appendBin(appendStr(dst, f.name), v[:])
				n++
			}
		case kindBool:
			if v := f.flag.get(m); !omit || v {
				code := byte(mpFalse)
				if v {
					code = mpTrue
				}
				dst = append(appendStr(dst, f.name), code)
				n++
			}
		case kindUint:
			if v := f.uint.get(m); !omit || v != 0 {
				dst = appendUint(appendStr(dst, f.name), v)
				n++
			}
		}
	}
	dst[header] |= byte(n)
	return dst
}

// appendStr writes s in the narrowest str form.
func appendStr(dst []byte, s string) []byte {
	switch n := len(s); {
	case n <= 31:
		dst = append(dst, mpFixStr|byte(n))
	case n <= 0xff:
		dst = append(dst, mpStr8, byte(n))
	case n <= 0xffff:
		dst = append(dst, mpStr16, byte(n>>8), byte(n))
	default:
		dst = append(dst, mpStr32, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, s...)
}

// appendBin writes p in the narrowest bin form.
func appendBin(dst, p []byte) []byte {
	switch n := len(p); {
	case n <= 0xff:
		dst = append(dst, mpBin8, byte(n))
	case n <= 0xffff:
		dst = append(dst, mpBin16, byte(n>>8), byte(n))
	default:
		dst = append(dst, mpBin32, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, p...)
}

// appendUint writes v in the narrowest unsigned form (msgpack's compact
// integers).
func appendUint(dst []byte, v uint64) []byte {
	switch {
	case v <= mpPosFixIntMax:
		return append(dst, byte(v))
	case v <= 0xff:
		return append(dst, mpUint8, byte(v))
	case v <= 0xffff:
		return append(dst, mpUint16, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(dst, mpUint32, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(dst, mpUint64, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
		byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
