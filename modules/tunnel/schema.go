package tunnel

import (
	"fmt"
	"reflect"
	"unsafe"
)

// The schema: for each message type, the keys of its payload map in the
// order they are written, whether each must be present, and its bound. It
// is the one description of the wire that both Encode (encode.go) and
// Decode (decode.go) follow; the Go type of each field (string, uintN,
// bool, GUID, []byte) decides its msgpack type.
//
// The order and the omit rules are those of the reflection encoder this
// package used before (struct order, "omitempty" on the optional keys), so
// the bytes are unchanged; testdata/wire-golden.txt pins them.
var (
	handshakeSchema = newSchema[Handshake](
		key{"Name", required, MaxNameLen},
		key{"Key", required, MaxKeyLen},
		key{"Version", required, 0xffff},
	)
	initiatorSchema = newSchema[Initiator](
		key{"GUID", required, 0},
		key{"Ip", always, MaxAddrLen},
		key{"Port", always, 0xffff},
		key{"Gatename", always, MaxNameLen},
		key{"ClientAddr", omitEmpty, MaxAddrLen},
		key{"Window", omitEmpty, MaxWindow},
		// Added in protocol version 2 (VersionSource): omitted when
		// empty, so what older peers receive is unchanged.
		key{"Source", omitEmpty, MaxNameLen},
	)
	dataSchema = newSchema[Data](
		key{"GUID", required, 0},
		key{"Data", required, MaxDataSize},
	)
	terminatorSchema = newSchema[Terminator](
		key{"GUID", required, 0},
		key{"Half", omitEmpty, 0},
	)
	windowSchema = newSchema[Window](
		key{"GUID", required, 0},
		key{"Credit", required, MaxWindow},
	)
	pingSchema = newSchema[Ping](
		key{"Nonce", required, 1<<64 - 1},
	)
	pongSchema = newSchema[Pong](
		key{"Nonce", required, 1<<64 - 1},
	)
	ackSchema = newSchema[Ack](
		key{"Ok", required, 0},
		key{"Message", omitEmpty, MaxReasonLen},
		key{"GUID", omitEmpty, 0},
		key{"Window", omitEmpty, MaxWindow},
	)
)

// presence says when a key is written and whether it must be read.
type presence uint8

const (
	// required keys are always written and must be present.
	required presence = iota
	// always keys are always written but may be absent (zero value).
	always
	// omitEmpty keys are written only when not zero, and may be absent.
	omitEmpty
)

// key is one row of a schema as written above: the payload key (the Go
// field of the same name holds its value), its presence, and its bound
// (the most bytes of a string or bin, the largest integer; unused for
// bool and GUID).
type key struct {
	name     string
	presence presence
	max      uint64
}

// kind is the msgpack type of a field, from its Go type.
type kind uint8

const (
	kindStr kind = iota + 1
	kindBin
	kindGUID
	kindBool
	kindUint16
	kindUint32
	kindUint64
)

// field is a key resolved against its Go struct: where its value lives.
type field struct {
	key
	kind kind
	off  uintptr
}

// schema is the resolved table of one message type. Encoding and decoding
// reach the fields through their offsets into the message, which is what
// lets one table serve both directions without reflection per frame and
// without moving the message to the heap (Data frames decode with no
// allocation).
type schema struct {
	fields   []field
	required uint // bit i: fields[i] is required
}

var (
	guidType = reflect.TypeFor[GUID]()
	binType  = reflect.TypeFor[[]byte]()
)

// newSchema resolves keys against M's fields. It panics, at package
// initialisation, when a key names no field, a field has a type the wire
// does not carry, or a field of M has no key: the table and the types
// cannot drift apart silently.
func newSchema[M Message](keys ...key) *schema {
	t := reflect.TypeFor[M]()
	if t.NumField() != len(keys) || len(keys) > 15 || len(keys) > int(unsafe.Sizeof(uint(0))*8) {
		panic(fmt.Sprintf("tunnel: schema of %v has %d keys for %d fields", t, len(keys), t.NumField()))
	}
	s := &schema{}
	for i, k := range keys {
		sf, ok := t.FieldByName(k.name)
		if !ok || len(k.name) > maxKeyNameLen {
			panic(fmt.Sprintf("tunnel: schema of %v: no field %q", t, k.name))
		}
		f := field{key: k, off: sf.Offset}
		switch {
		case sf.Type == guidType:
			f.kind = kindGUID
		case sf.Type == binType:
			f.kind = kindBin
		case sf.Type.Kind() == reflect.String:
			f.kind = kindStr
		case sf.Type.Kind() == reflect.Bool:
			f.kind = kindBool
		case sf.Type.Kind() == reflect.Uint16:
			f.kind = kindUint16
		case sf.Type.Kind() == reflect.Uint32:
			f.kind = kindUint32
		case sf.Type.Kind() == reflect.Uint64:
			f.kind = kindUint64
		default:
			panic(fmt.Sprintf("tunnel: schema of %v: field %s of type %v", t, k.name, sf.Type))
		}
		if k.presence == required {
			s.required |= 1 << i
		}
		s.fields = append(s.fields, f)
	}
	return s
}

// maxKeyNameLen bounds payload keys; Decode refuses longer ones before
// looking them up.
const maxKeyNameLen = 16
