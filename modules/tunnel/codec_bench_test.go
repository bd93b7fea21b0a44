package tunnel

import (
	"net/netip"
	"testing"
)

// The codec's own cost per frame, apart from the transport: a Data frame
// of a relay's copy size each way, and the control frames of a stream's
// life. These depend on CPU time only, so they compare well between two
// versions even on a busy machine, unlike the loopback throughput.
func BenchmarkCodec(b *testing.B) {
	payload := randomBytes(copyChunk)
	b.Run("append-data", func(b *testing.B) {
		buf := make([]byte, 0, MaxFrameSize)
		b.SetBytes(copyChunk)
		for b.Loop() {
			buf = AppendData(buf[:0], testGUID, payload)
		}
	})
	b.Run("decode-data", func(b *testing.B) {
		frame := AppendData(nil, testGUID, payload)
		b.SetBytes(copyChunk)
		for b.Loop() {
			if _, _, err := decodeData(frame); err != nil {
				b.Fatal(err)
			}
		}
	})
	control := []Message{
		Initiator{GUID: testGUID, Ip: "192.168.1.10", Port: 8443, Gatename: "myhome", ClientAddr: "[2001:db8::1]:51000", Window: 1 << 20},
		Ack{Ok: true, GUID: testGUID, Window: DefaultWindow},
		Window{GUID: testGUID, Credit: 128 << 10},
		Terminator{GUID: testGUID, Half: true},
		Ping{Nonce: 1 << 40},
	}
	// An Initiator as the cloud sends one per new ingress connection:
	// Encode into a fresh slice (Session.open keeps the frame), and the
	// agent's Decode of it.
	ingress := Initiator{GUID: testGUID, Gatename: "myhome.example.net", ClientAddr: "203.0.113.7:51000", Window: 1 << 20}
	b.Run("encode-initiator", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Encode(ingress); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What Session.OpenMeta does before writing: the Initiator of a
	// Meta, encoded without parsing back its typed addresses.
	meta := Meta{Gateway: "myhome.example.net", Client: netip.MustParseAddrPort("203.0.113.7:51000")}
	b.Run("open-meta-frame", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			init, typed := meta.initiator()
			init.GUID, init.Window = testGUID, 1<<20
			if _, err := initiatorFrame(init, typed); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-initiator", func(b *testing.B) {
		b.ReportAllocs()
		f, err := Encode(ingress)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := Decode(f); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The session reader's decoding of it, which skips boxing.
	b.Run("decode-initiator-session", func(b *testing.B) {
		b.ReportAllocs()
		f, err := Encode(ingress)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := decodeInitiator(f); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode-control", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			for _, m := range control {
				var err error
				if buf, err = AppendEncode(buf[:0], m); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("decode-control", func(b *testing.B) {
		var frames [][]byte
		for _, m := range control {
			f, err := Encode(m)
			if err != nil {
				b.Fatal(err)
			}
			frames = append(frames, f)
		}
		for b.Loop() {
			for _, f := range frames {
				if _, err := Decode(f); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
