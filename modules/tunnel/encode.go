package tunnel

import (
	"errors"
	"fmt"
	"unsafe"
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
	start := len(dst)
	switch m := msg.(type) {
	case Data:
		return AppendData(dst, m.GUID, m.Data), nil
	case *Data:
		return AppendData(dst, m.GUID, m.Data), nil
	case Handshake:
		dst = handshakeSchema.append(dst, m.Type(), unsafe.Pointer(&m))
	case Initiator:
		dst = initiatorSchema.append(dst, m.Type(), unsafe.Pointer(&m))
	case Terminator:
		dst = terminatorSchema.append(dst, m.Type(), unsafe.Pointer(&m))
	case Window:
		dst = windowSchema.append(dst, m.Type(), unsafe.Pointer(&m))
	case Ping:
		dst = pingSchema.append(dst, m.Type(), unsafe.Pointer(&m))
	case Pong:
		dst = pongSchema.append(dst, m.Type(), unsafe.Pointer(&m))
	case Ack:
		dst = ackSchema.append(dst, m.Type(), unsafe.Pointer(&m))
	default:
		return dst, fmt.Errorf("encode %T: not a message of this package", msg)
	}
	if n := len(dst) - start; n > MaxFrameSize {
		return dst[:start], fmt.Errorf("%w: %v of %d bytes", ErrFrameTooLarge, msg.Type(), n)
	}
	return dst, nil
}

// AppendData appends a Data frame to dst, for the throughput path: no
// validation and no allocation beyond growing dst. The caller keeps
// 1 <= len(p) <= MaxDataSize and g non-zero. The frame is
//
//	0x03 0x82 0xa4 "GUID" 0xc4 0x10 <16 bytes> 0xa4 "Data" <bin8|bin16 header> <payload>
func AppendData(dst []byte, g GUID, p []byte) []byte {
	d := Data{GUID: g, Data: p}
	return dataSchema.append(dst, TypeData, unsafe.Pointer(&d))
}

// append writes the frame of the message at m (whose type s describes):
// the type byte, then the payload map with s's keys in order, leaving out
// empty omitEmpty keys.
func (s *schema) append(dst []byte, t MessageType, m unsafe.Pointer) []byte {
	n := 0
	for i := range s.fields {
		if !s.fields[i].omitted(m) {
			n++
		}
	}
	dst = append(dst, byte(t), mpFixMap|byte(n))
	for i := range s.fields {
		f := &s.fields[i]
		if f.omitted(m) {
			continue
		}
		dst = appendStr(dst, f.name)
		p := unsafe.Add(m, f.off)
		switch f.kind {
		case kindStr:
			dst = appendStr(dst, *(*string)(p))
		case kindBin:
			dst = appendBin(dst, *(*[]byte)(p))
		case kindGUID:
			dst = appendBin(dst, (*GUID)(p)[:])
		case kindBool:
			if *(*bool)(p) {
				dst = append(dst, mpTrue)
			} else {
				dst = append(dst, mpFalse)
			}
		case kindUint16:
			dst = appendUint(dst, uint64(*(*uint16)(p)))
		case kindUint32:
			dst = appendUint(dst, uint64(*(*uint32)(p)))
		case kindUint64:
			dst = appendUint(dst, *(*uint64)(p))
		}
	}
	return dst
}

// omitted reports whether f is left out of the frame of the message at m.
func (f *field) omitted(m unsafe.Pointer) bool {
	if f.presence != omitEmpty {
		return false
	}
	p := unsafe.Add(m, f.off)
	switch f.kind {
	case kindStr:
		return *(*string)(p) == ""
	case kindBin:
		return len(*(*[]byte)(p)) == 0
	case kindGUID:
		return (*GUID)(p).IsZero()
	case kindBool:
		return !*(*bool)(p)
	case kindUint16:
		return *(*uint16)(p) == 0
	case kindUint32:
		return *(*uint32)(p) == 0
	default:
		return *(*uint64)(p) == 0
	}
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
