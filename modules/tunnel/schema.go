package tunnel

import (
	"fmt"
	"reflect"
)

// The schema: for each message type, the keys of its payload map in the
// order they are written, whether each must be present, its bound, and
// the pair of functions that read and write the Go field holding its
// value. It is the one description of the wire that both Encode
// (encode.go) and Decode (decode.go) follow; the constructor of each row
// (strKey, binKey, guidKey, boolKey, uintKey) decides its msgpack type.
//
// The order and the omit rules are those of the reflection encoder this
// package used before (struct order, "omitempty" on the optional keys), so
// the bytes are unchanged; testdata/wire-golden.txt pins them.
var (
	handshakeSchema = newSchema(
		strKey("Name", required, MaxNameLen,
			func(m Handshake) string { return m.Name },
			func(m Handshake, v string) Handshake { m.Name = v; return m }),
		strKey("Key", required, MaxKeyLen,
			func(m Handshake) string { return m.Key },
			func(m Handshake, v string) Handshake { m.Key = v; return m }),
		uintKey("Version", required, 0xffff,
			func(m Handshake) uint64 { return uint64(m.Version) },
			func(m Handshake, v uint64) Handshake { m.Version = uint16(v); return m }),
	)
	initiatorSchema = newSchema(
		guidKey("GUID", required,
			func(m Initiator) GUID { return m.GUID },
			func(m Initiator, v GUID) Initiator { m.GUID = v; return m }),
		strKey("Ip", always, MaxAddrLen,
			func(m Initiator) string { return m.Ip },
			func(m Initiator, v string) Initiator { m.Ip = v; return m }),
		uintKey("Port", always, 0xffff,
			func(m Initiator) uint64 { return uint64(m.Port) },
			func(m Initiator, v uint64) Initiator { m.Port = uint16(v); return m }),
		strKey("Gatename", always, MaxNameLen,
			func(m Initiator) string { return m.Gatename },
			func(m Initiator, v string) Initiator { m.Gatename = v; return m }),
		strKey("ClientAddr", omitEmpty, MaxAddrLen,
			func(m Initiator) string { return m.ClientAddr },
			func(m Initiator, v string) Initiator { m.ClientAddr = v; return m }),
		uintKey("Window", omitEmpty, MaxWindow,
			func(m Initiator) uint64 { return uint64(m.Window) },
			func(m Initiator, v uint64) Initiator { m.Window = uint32(v); return m }),
		// Added in protocol version 2 (VersionSource): omitted when
		// empty, so what older peers receive is unchanged.
		strKey("Source", omitEmpty, MaxNameLen,
			func(m Initiator) string { return m.Source },
			func(m Initiator, v string) Initiator { m.Source = v; return m }),
	)
	dataSchema = newSchema(
		guidKey("GUID", required,
			func(m Data) GUID { return m.GUID },
			func(m Data, v GUID) Data { m.GUID = v; return m }),
		binKey("Data", required, MaxDataSize,
			func(m Data) []byte { return m.Data },
			func(m Data, v []byte) Data { m.Data = v; return m }),
	)
	terminatorSchema = newSchema(
		guidKey("GUID", required,
			func(m Terminator) GUID { return m.GUID },
			func(m Terminator, v GUID) Terminator { m.GUID = v; return m }),
		boolKey("Half", omitEmpty,
			func(m Terminator) bool { return m.Half },
			func(m Terminator, v bool) Terminator { m.Half = v; return m }),
	)
	windowSchema = newSchema(
		guidKey("GUID", required,
			func(m Window) GUID { return m.GUID },
			func(m Window, v GUID) Window { m.GUID = v; return m }),
		uintKey("Credit", required, MaxWindow,
			func(m Window) uint64 { return uint64(m.Credit) },
			func(m Window, v uint64) Window { m.Credit = uint32(v); return m }),
	)
	pingSchema = newSchema(
		uintKey("Nonce", required, 1<<64-1,
			func(m Ping) uint64 { return m.Nonce },
			func(m Ping, v uint64) Ping { m.Nonce = v; return m }),
	)
	pongSchema = newSchema(
		uintKey("Nonce", required, 1<<64-1,
			func(m Pong) uint64 { return m.Nonce },
			func(m Pong, v uint64) Pong { m.Nonce = v; return m }),
	)
	ackSchema = newSchema(
		boolKey("Ok", required,
			func(m Ack) bool { return m.Ok },
			func(m Ack, v bool) Ack { m.Ok = v; return m }),
		strKey("Message", omitEmpty, MaxReasonLen,
			func(m Ack) string { return m.Message },
			func(m Ack, v string) Ack { m.Message = v; return m }),
		guidKey("GUID", omitEmpty,
			func(m Ack) GUID { return m.GUID },
			func(m Ack, v GUID) Ack { m.GUID = v; return m }),
		uintKey("Window", omitEmpty, MaxWindow,
			func(m Ack) uint64 { return uint64(m.Window) },
			func(m Ack, v uint64) Ack { m.Window = uint32(v); return m }),
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

// key is the wire side of a schema row: the payload key (the Go field of
// the same name holds its value), its presence, and its bound (the most
// bytes of a string or bin, the largest integer; unused for bool and
// GUID).
type key struct {
	name     string
	presence presence
	max      uint64
}

// kind is the msgpack type of a field, and so which accessor pair of its
// row is set.
type kind uint8

const (
	kindStr kind = iota + 1
	kindBin
	kindGUID
	kindBool
	kindUint
)

// access reads and writes one Go field of a message of type M.
//
// The message travels by value, not by pointer: the functions are called
// through the table, and the compiler cannot see what an indirect call
// does with a pointer, so passing &m would move every encoded or decoded
// message to the heap (Data frames decode with no allocation; that must
// stay so). Copying the small message structs costs less than that
// allocation.
type access[M, V any] struct {
	get func(M) V
	set func(M, V) M
}

// field is one row of a schema: its key, its kind, and the accessor pair
// of that kind (the others are nil). All unsigned widths share kindUint:
// the bound keeps a decoded value within the Go field's type, which
// newSchema checks.
type field[M any] struct {
	key
	kind kind
	str  access[M, string]
	bin  access[M, []byte]
	guid access[M, GUID]
	flag access[M, bool]
	uint access[M, uint64]
}

func strKey[M any](name string, p presence, max uint64, get func(M) string, set func(M, string) M) field[M] {
	return field[M]{key: key{name, p, max}, kind: kindStr, str: access[M, string]{get, set}}
}

func binKey[M any](name string, p presence, max uint64, get func(M) []byte, set func(M, []byte) M) field[M] {
	return field[M]{key: key{name, p, max}, kind: kindBin, bin: access[M, []byte]{get, set}}
}

func guidKey[M any](name string, p presence, get func(M) GUID, set func(M, GUID) M) field[M] {
	return field[M]{key: key{name, p, 0}, kind: kindGUID, guid: access[M, GUID]{get, set}}
}

func boolKey[M any](name string, p presence, get func(M) bool, set func(M, bool) M) field[M] {
	return field[M]{key: key{name, p, 0}, kind: kindBool, flag: access[M, bool]{get, set}}
}

func uintKey[M any](name string, p presence, max uint64, get func(M) uint64, set func(M, uint64) M) field[M] {
	return field[M]{key: key{name, p, max}, kind: kindUint, uint: access[M, uint64]{get, set}}
}

// schema is the table of one message type, which lets one description
// serve both directions without reflection per frame.
type schema[M Message] struct {
	fields   []field[M]
	required uint // bit i: fields[i] is required
}

// newSchema checks fields against M. It panics, at package
// initialisation, when a key names no field of M, a field of M has no
// key, or a row's accessors reach another field than the one its key
// names or one that cannot hold its bound: the table and the types cannot
// drift apart silently. The check uses reflection once, at start-up; the
// frames never do.
func newSchema[M Message](fields ...field[M]) *schema[M] {
	t := reflect.TypeFor[M]()
	if t.NumField() != len(fields) || len(fields) > 15 {
		panic(fmt.Sprintf("tunnel: schema of %v has %d keys for %d fields", t, len(fields), t.NumField()))
	}
	s := &schema[M]{fields: fields}
	for i, f := range fields {
		if _, ok := t.FieldByName(f.name); !ok || len(f.name) > maxKeyNameLen {
			panic(fmt.Sprintf("tunnel: schema of %v: no field %q", t, f.name))
		}
		checkAccess(f)
		if f.presence == required {
			s.required |= 1 << i
		}
	}
	return s
}

// checkAccess sets f's value to a non-zero one through its setter and
// panics unless exactly the Go field named by its key changed, and the
// getter reads the value back.
func checkAccess[M Message](f field[M]) {
	var m M
	var back any
	var want any
	switch f.kind {
	case kindStr:
		want = "x"
		m = f.str.set(m, "x")
		back = f.str.get(m)
	case kindBin:
		p := []byte{1}
		m = f.bin.set(m, p)
		got := f.bin.get(m)
		want, back = true, len(got) == 1 && &got[0] == &p[0]
	case kindGUID:
		g := GUID{1}
		want = g
		m = f.guid.set(m, g)
		back = f.guid.get(m)
	case kindBool:
		want = true
		m = f.flag.set(m, true)
		back = f.flag.get(m)
	case kindUint:
		// The bound itself must survive the trip: a bound wider than
		// the Go field would be truncated silently on decode.
		want = f.max
		m = f.uint.set(m, f.max)
		back = f.uint.get(m)
	default:
		panic(fmt.Sprintf("tunnel: schema of %T: key %q has no kind", m, f.name))
	}
	if back != want {
		panic(fmt.Sprintf("tunnel: schema of %T: accessors of %q do not round-trip", m, f.name))
	}
	v := reflect.ValueOf(m)
	for i := range v.NumField() {
		changed := !v.Field(i).IsZero()
		if named := v.Type().Field(i).Name == f.name; changed != named {
			panic(fmt.Sprintf("tunnel: schema of %T: accessors of %q reach field %s", m, f.name, v.Type().Field(i).Name))
		}
	}
}

// maxKeyNameLen bounds payload keys; Decode refuses longer ones before
// looking them up.
const maxKeyNameLen = 16
