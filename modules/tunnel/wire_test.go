package tunnel

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

var testGUID = GUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func sampleMessages() []Message {
	return []Message{
		Handshake{Name: "myhome", Key: "secret-token", Version: ProtocolVersion},
		Initiator{GUID: testGUID, Ip: "192.168.1.10", Port: 8443, Gatename: "myhome", ClientAddr: "[2001:db8::1]:51000", Window: 1 << 20},
		Initiator{GUID: testGUID, Gatename: "myhome"},
		Data{GUID: testGUID, Data: []byte("hello")},
		Data{GUID: testGUID, Data: bytes.Repeat([]byte{0xab}, 300)},
		Data{GUID: testGUID, Data: bytes.Repeat([]byte{0xcd}, MaxDataSize)},
		Terminator{GUID: testGUID},
		Terminator{GUID: testGUID, Half: true},
		Window{GUID: testGUID, Credit: 128 << 10},
		Ping{Nonce: 0},
		Ping{Nonce: 1<<64 - 1},
		Pong{Nonce: 42},
		Ack{Ok: true},
		Ack{Ok: false, Message: "unknown gateway"},
		Ack{Ok: true, GUID: testGUID, Window: DefaultWindow},
		Ack{Ok: false, Message: "too many streams", GUID: testGUID},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", m, err)
		}
		if len(b) > MaxFrameSize {
			t.Fatalf("%v: frame of %d bytes", m.Type(), len(b))
		}
		if MessageType(b[0]) != m.Type() {
			t.Fatalf("type byte %#x for %v", b[0], m.Type())
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode(%v)): %v", m.Type(), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip of %v:\n got %#v\nwant %#v", m.Type(), got, m)
		}
	}
}

// The hand-written Data encoding must be exactly what a generic msgpack
// encoder produces from the struct, so that peers in other languages agree.
func TestDataEncodingMatchesMsgpack(t *testing.T) {
	for _, n := range []int{1, 255, 256, MaxDataSize} {
		d := Data{GUID: testGUID, Data: bytes.Repeat([]byte{7}, n)}
		generic, err := msgpack.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		want := append([]byte{byte(TypeData)}, generic...)
		got := AppendData(nil, d.GUID, d.Data)
		if !bytes.Equal(got, want) {
			t.Fatalf("len %d: hand encoding differs from msgpack:\n got % x\nwant % x", n, got[:40], want[:40])
		}
		if len(got)-n > DataOverhead {
			t.Fatalf("len %d: overhead %d > DataOverhead %d", n, len(got)-n, DataOverhead)
		}
	}
}

// A peer may order keys differently and use wider encodings; Decode accepts
// any valid msgpack for the schema.
func TestDecodeGenericEncodings(t *testing.T) {
	type dataReversed struct {
		Data []byte `msgpack:"Data"`
		GUID []byte `msgpack:"GUID"`
	}
	p, err := msgpack.Marshal(dataReversed{Data: []byte("xyz"), GUID: testGUID[:]})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(append([]byte{byte(TypeData)}, p...))
	if err != nil {
		t.Fatal(err)
	}
	if d := m.(Data); d.GUID != testGUID || string(d.Data) != "xyz" {
		t.Fatalf("got %#v", d)
	}

	// Non-compact integers (int64 encoding of a small number).
	type window struct {
		GUID   []byte `msgpack:"GUID"`
		Credit int64  `msgpack:"Credit"`
	}
	p, err = msgpack.Marshal(window{GUID: testGUID[:], Credit: 4096})
	if err != nil {
		t.Fatal(err)
	}
	m, err = Decode(append([]byte{byte(TypeWindow)}, p...))
	if err != nil {
		t.Fatal(err)
	}
	if w := m.(Window); w.Credit != 4096 {
		t.Fatalf("got %#v", w)
	}
}

func frame(t MessageType, v any) []byte {
	p, err := msgpack.Marshal(v)
	if err != nil {
		panic(err)
	}
	return append([]byte{byte(t)}, p...)
}

func TestDecodeStrict(t *testing.T) {
	valid, _ := Encode(Window{GUID: testGUID, Credit: 10})
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown type", []byte{0x42, 0x80}},
		{"type only", []byte{byte(TypePing)}},
		{"not a map", frame(TypePing, []any{1})},
		{"trailing bytes", append(append([]byte{}, valid...), 0xc0)},
		{"truncated", valid[:len(valid)-1]},
		{"unknown key", frame(TypePing, map[string]any{"Nonce": 1, "Extra": 2})},
		{"missing key", frame(TypeWindow, map[string]any{"GUID": testGUID[:]})},
		{"duplicate key", []byte{byte(TypePing), 0x82, 0xa5, 'N', 'o', 'n', 'c', 'e', 1, 0xa5, 'N', 'o', 'n', 'c', 'e', 2}},
		{"negative int", frame(TypeWindow, map[string]any{"GUID": testGUID[:], "Credit": -1})},
		{"int as string", frame(TypeWindow, map[string]any{"GUID": testGUID[:], "Credit": "1"})},
		{"credit too large", frame(TypeWindow, map[string]any{"GUID": testGUID[:], "Credit": MaxWindow + 1})},
		{"zero credit", frame(TypeWindow, map[string]any{"GUID": testGUID[:], "Credit": 0})},
		{"short GUID", frame(TypeTerminator, map[string]any{"GUID": []byte{1, 2, 3}})},
		{"GUID as string", frame(TypeTerminator, map[string]any{"GUID": string(testGUID[:])})},
		{"zero GUID", frame(TypeTerminator, map[string]any{"GUID": make([]byte, 16)})},
		{"bool as int", frame(TypeTerminator, map[string]any{"GUID": testGUID[:], "Half": 1})},
		{"empty name", frame(TypeHandshake, map[string]any{"Name": "", "Key": "k", "Version": 1})},
		{"long name", frame(TypeHandshake, map[string]any{"Name": strings.Repeat("a", 254), "Key": "k", "Version": 1})},
		{"version 0", frame(TypeHandshake, map[string]any{"Name": "a", "Key": "k", "Version": 0})},
		{"version overflow", frame(TypeHandshake, map[string]any{"Name": "a", "Key": "k", "Version": 1 << 16})},
		{"bad ip", frame(TypeInitiator, map[string]any{"GUID": testGUID[:], "Ip": "not-an-ip", "Port": 1, "Gatename": "g"})},
		{"bad client addr", frame(TypeInitiator, map[string]any{"GUID": testGUID[:], "Gatename": "g", "ClientAddr": "1.2.3.4"})},
		{"port overflow", frame(TypeInitiator, map[string]any{"GUID": testGUID[:], "Port": 70000, "Gatename": "g"})},
		{"tiny window", frame(TypeInitiator, map[string]any{"GUID": testGUID[:], "Gatename": "g", "Window": 10})},
		{"empty data", frame(TypeData, map[string]any{"GUID": testGUID[:], "Data": []byte{}})},
		{"data extra key", frame(TypeData, map[string]any{"GUID": testGUID[:], "Data": []byte{1}, "X": 1})},
		{"long ack message", frame(TypeAck, map[string]any{"Ok": false, "Message": strings.Repeat("x", MaxReasonLen+1)})},
		{"session ack with window", frame(TypeAck, map[string]any{"Ok": true, "Window": DefaultWindow})},
		{"map count lies", []byte{byte(TypePing), 0xdf, 0xff, 0xff, 0xff, 0xff}},
		{"str32 length lies", []byte{byte(TypeAck), 0x81, 0xa7, 'M', 'e', 's', 's', 'a', 'g', 'e', 0xdb, 0xff, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode(tt.b)
			if err == nil {
				t.Fatalf("Decode accepted %#v", m)
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
		})
	}
}

func TestDecodeFrameTooLarge(t *testing.T) {
	b := make([]byte, MaxFrameSize+1)
	b[0] = byte(TypeData)
	if _, err := Decode(b); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
}

func TestEncodeValidates(t *testing.T) {
	for _, m := range []Message{
		Handshake{Name: "x", Key: "", Version: 1},
		Initiator{Gatename: "g"}, // zero GUID
		Data{GUID: testGUID},
		Data{GUID: testGUID, Data: make([]byte, MaxDataSize+1)},
		Window{GUID: testGUID},
	} {
		if _, err := Encode(m); err == nil {
			t.Errorf("Encode(%#v) accepted an invalid message", m)
		}
	}
	if _, err := Encode(nil); err == nil {
		t.Error("Encode(nil) succeeded")
	}
}

func TestDecodeDataAllocations(t *testing.T) {
	b := AppendData(nil, testGUID, make([]byte, 32<<10))
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := decodeData(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("decodeData allocates %v times per frame", allocs)
	}
	buf := make([]byte, 0, MaxFrameSize)
	p := make([]byte, 32<<10)
	allocs = testing.AllocsPerRun(100, func() {
		buf = AppendData(buf[:0], testGUID, p)
	})
	if allocs != 0 {
		t.Fatalf("AppendData allocates %v times per frame", allocs)
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		// Large seeds make the fuzzer spend its time minimizing them.
		if len(b) <= 1024 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		// The session reader's Initiator decoder agrees with Decode.
		if init, ierr := decodeInitiator(b); (ierr == nil) != (err == nil && m.Type() == TypeInitiator) || (ierr == nil && init != m) {
			t.Fatalf("decodeInitiator = %#v, %v; Decode = %#v, %v", init, ierr, m, err)
		}
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned %#v with error %v", m, err)
			}
			return
		}
		// Whatever Decode accepts, Encode must re-encode, and the result
		// must decode to the same message.
		b2, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode(Decode(b)) = %v for %#v", err, m)
		}
		m2, err := Decode(b2)
		if err != nil {
			t.Fatalf("Decode(Encode(m)) = %v", err)
		}
		if init, ok := m.(Initiator); ok {
			checkInitiatorFastPath(t, init)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("unstable round trip:\n%#v\n%#v", m, m2)
		}
	})
}

// Decode hands out the payload of a Data frame where it lies in the frame:
// the session copies it once, into the stream's buffer, and no more.
func TestDecodeDataAliasesFrame(t *testing.T) {
	b := AppendData(nil, testGUID, []byte("payload"))
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	d := m.(Data)
	if &d.Data[0] != &b[len(b)-len("payload")] {
		t.Fatal("Decode copied the Data payload")
	}
	_, p, err := decodeData(b)
	if err != nil || &p[0] != &d.Data[0] {
		t.Fatalf("decodeData copied the payload (%v)", err)
	}
}

// The Source key is new in version 2 and optional: an Initiator without it
// is byte for byte what version 1 peers exchange, and one with it round trips.
func TestInitiatorSource(t *testing.T) {
	with := Initiator{GUID: testGUID, Ip: "10.0.0.2", Port: 22, Gatename: "office", Source: "home"}
	b, err := Encode(with)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("\xa6Source\xa4home")) {
		t.Fatalf("no Source key in % x", b)
	}
	m, err := Decode(b)
	if err != nil || !reflect.DeepEqual(m, with) {
		t.Fatalf("round trip %#v, %v", m, err)
	}
	without := with
	without.Source = ""
	b2, _ := Encode(without)
	if bytes.Contains(b2, []byte("Source")) {
		t.Fatal("empty Source written")
	}
	if _, err := Decode(frame(TypeInitiator, map[string]any{"GUID": testGUID[:], "Gatename": "g", "Source": strings.Repeat("s", MaxNameLen+1)})); !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized Source: %v", err)
	}
}

// checkInitiatorFastPath fails unless Encode's hand-written Initiator
// frame is the table's (initiatorSchema), byte for byte, and of the size
// Encode allocates for it.
func checkInitiatorFastPath(t *testing.T, m Initiator) {
	t.Helper()
	want := initiatorSchema.append(nil, TypeInitiator, m)
	got, err := Encode(m)
	if err != nil {
		t.Fatalf("Encode(%#v): %v", m, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode(%#v):\n got % x\nwant % x", m, got, want)
	}
	if len(got) != initiatorSize(m) || cap(got) != len(got) {
		t.Fatalf("Encode(%#v): %d bytes, cap %d, initiatorSize %d", m, len(got), cap(got), initiatorSize(m))
	}
	pre := []byte("prefix")
	got, err = AppendEncode(pre, m)
	if err != nil || !bytes.Equal(got[len(pre):], want) || string(got[:len(pre)]) != "prefix" {
		t.Fatalf("AppendEncode(%#v) = % x, %v", m, got, err)
	}
}

// The Initiator fast path writes what the table does for every shape of
// Initiator: each optional key present or not, every width of string
// header and integer the bounds allow.
func TestInitiatorFastPath(t *testing.T) {
	names := []string{"", "a", strings.Repeat("n", 31), strings.Repeat("n", 32), strings.Repeat("n", MaxNameLen)}
	for _, m := range sampleMessages() {
		if init, ok := m.(Initiator); ok {
			checkInitiatorFastPath(t, init)
		}
	}
	for _, gate := range names {
		for _, source := range names {
			for _, port := range []uint16{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff} {
				for _, window := range []uint32{0, MinWindow, 0xffff, 0x10000, MaxWindow} {
					checkInitiatorFastPath(t, Initiator{GUID: testGUID, Gatename: gate, Source: source, Port: port, Window: window})
				}
			}
		}
	}
	for _, addr := range []string{"", "1.2.3.4", "2001:db8::1", "fe80::1%" + strings.Repeat("e", 40)} {
		for _, client := range []string{"", "203.0.113.7:51000", "[2001:db8::1]:443", "[fe80::1%" + strings.Repeat("e", 40) + "]:1"} {
			checkInitiatorFastPath(t, Initiator{GUID: testGUID, Ip: addr, Port: 22, Gatename: "g", ClientAddr: client})
		}
	}
	// Invalid ones are refused, as the table's path refuses them.
	for _, m := range []Initiator{
		{Gatename: "zero guid"},
		{GUID: testGUID, Ip: "not an ip"},
		{GUID: testGUID, ClientAddr: "1.2.3.4"},
		{GUID: testGUID, Gatename: strings.Repeat("n", MaxNameLen+1)},
		{GUID: testGUID, Window: 1},
	} {
		if b, err := Encode(m); err == nil || !errors.Is(err, ErrProtocol) {
			t.Errorf("Encode(%#v) = % x, %v; want an ErrProtocol", m, b, err)
		}
		if b, err := AppendEncode([]byte("x"), m); err == nil || string(b) != "x" {
			t.Errorf("AppendEncode(%#v) = % x, %v; want an error and dst unchanged", m, b, err)
		}
	}
}
