package clienthello

import (
	"crypto/tls"
	"testing"
	"time"
)

// BenchmarkPeek peeks a typical ClientHello (Go's default, with a
// post-quantum key share, SNI and ALPN) from an in-memory connection.
func BenchmarkPeek(b *testing.B) {
	for _, bc := range []struct {
		name  string
		chunk int
	}{{"one read", 0}, {"reads of 512 bytes", 512}} {
		b.Run(bc.name, func(b *testing.B) {
			wire := captureHello(b, &tls.Config{ServerName: "myhome.box.example.org", NextProtos: []string{"h2", "http/1.1"}})
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			conn := newMemConn(nil, bc.chunk)
			for b.Loop() {
				conn.data = wire
				conn.deadlines = conn.deadlines[:0]
				info, _, err := Peek(conn, 0, time.Second)
				if err != nil || info.ServerName != "myhome.box.example.org" {
					b.Fatal(info, err)
				}
			}
		})
	}
}

// BenchmarkParse measures the parser alone, on a hello split in 64-byte
// records, the assembling worst case short of pathological.
func BenchmarkParse(b *testing.B) {
	wire := captureHello(b, &tls.Config{ServerName: "myhome.box.example.org", NextProtos: []string{"h2", "http/1.1"}})
	for _, bc := range []struct {
		name string
		wire []byte
	}{{"one record", wire}, {"64-byte records", records(handshakeBytes(b, wire), 64)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.wire)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(bc.wire); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
