package tunnel

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/wire-golden.txt from the current encoder")

// goldenMessages cover every message type, every optional key present and
// absent, and each width of string, bin and integer the encoder chooses.
// Their frames are pinned in testdata/wire-golden.txt, written by the
// reflection encoder this package used before the schema table: deployed
// agents read and write exactly these bytes.
func goldenMessages() []struct {
	name string
	msg  Message
} {
	type named = struct {
		name string
		msg  Message
	}
	return []named{
		{"handshake", Handshake{Name: "myhome", Key: "secret-token", Version: 1}},
		{"handshake-str8", Handshake{Name: strings.Repeat("n", 40), Key: strings.Repeat("k", 200), Version: 1}},
		{"handshake-str16", Handshake{Name: strings.Repeat("n", 253), Key: strings.Repeat("k", 1024), Version: 0x1234}},
		{"handshake-version-uint8", Handshake{Name: "a", Key: "b", Version: 200}},
		{"initiator-full", Initiator{GUID: testGUID, Ip: "192.168.1.10", Port: 8443, Gatename: "myhome", ClientAddr: "[2001:db8::1]:51000", Window: 1 << 20}},
		{"initiator-ingress", Initiator{GUID: testGUID, Gatename: "myhome"}},
		{"initiator-port-fixint", Initiator{GUID: testGUID, Ip: "10.0.0.1", Port: 22, Gatename: "gw"}},
		{"initiator-port-uint8", Initiator{GUID: testGUID, Ip: "10.0.0.1", Port: 200, Gatename: "gw"}},
		{"initiator-window-uint16", Initiator{GUID: testGUID, Gatename: "g", Window: MinWindow}},
		{"initiator-window-max", Initiator{GUID: testGUID, Gatename: "g", Window: MaxWindow}},
		{"data-1", Data{GUID: testGUID, Data: []byte("x")}},
		{"data-255", Data{GUID: testGUID, Data: bytes.Repeat([]byte{0xab}, 255)}},
		{"data-256", Data{GUID: testGUID, Data: bytes.Repeat([]byte{0xcd}, 256)}},
		{"terminator", Terminator{GUID: testGUID}},
		{"terminator-half", Terminator{GUID: testGUID, Half: true}},
		{"window", Window{GUID: testGUID, Credit: 128 << 10}},
		{"window-small", Window{GUID: testGUID, Credit: 1}},
		{"ping-0", Ping{Nonce: 0}},
		{"ping-max", Ping{Nonce: 1<<64 - 1}},
		{"ping-uint32", Ping{Nonce: 1 << 31}},
		{"pong", Pong{Nonce: 42}},
		{"ack-session", Ack{Ok: true}},
		{"ack-session-refused", Ack{Ok: false, Message: "unknown gateway"}},
		{"ack-stream", Ack{Ok: true, GUID: testGUID, Window: DefaultWindow}},
		{"ack-stream-refused", Ack{Ok: false, Message: "too many streams", GUID: testGUID}},
		{"ack-stream-message", Ack{Ok: true, Message: strings.Repeat("m", 1024), GUID: testGUID}},
	}
}

func TestWireGolden(t *testing.T) {
	const path = "testdata/wire-golden.txt"
	if *updateGolden {
		var out strings.Builder
		for _, g := range goldenMessages() {
			b, err := Encode(g.msg)
			if err != nil {
				t.Fatalf("%s: %v", g.name, err)
			}
			fmt.Fprintf(&out, "%s %x\n", g.name, b)
		}
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string][]byte{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, h, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("bad golden line %q", sc.Text())
		}
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = b
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, g := range goldenMessages() {
		w, ok := want[g.name]
		if !ok {
			t.Fatalf("%s: no golden frame", g.name)
		}
		got, err := Encode(g.msg)
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		if !bytes.Equal(got, w) {
			t.Errorf("%s: frame changed:\n got %x\nwant %x", g.name, got, w)
		}
		m, err := Decode(w)
		if err != nil {
			t.Fatalf("%s: decode golden: %v", g.name, err)
		}
		if !reflect.DeepEqual(m, g.msg) {
			t.Errorf("%s: golden decodes to %#v", g.name, m)
		}
	}
}
