package clienthello

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// Pending and Discard take the peeked bytes off the replay without a copy
// (ingress sends them as a stream's early data); the Conn then goes on
// reading and writing its socket.
func TestPendingDiscardOverTCP(t *testing.T) {
	client, server := testtools.TCPPair(t)
	hello := captureHello(t, &tls.Config{ServerName: "pending.example"})
	if _, err := client.Write(hello); err != nil {
		t.Fatal(err)
	}
	info, rc, err := Peek(server, 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if info.ServerName != "pending.example" {
		t.Fatalf("server name %q", info.ServerName)
	}
	if rc.raw == nil {
		t.Fatal("a TCP connection is not read with raw system calls")
	}
	if p := rc.Pending(); !bytes.Equal(p, hello) {
		t.Fatalf("Pending = %d bytes, want the %d of the ClientHello", len(p), len(hello))
	}
	if n := rc.Discard(10); n != 10 {
		t.Fatalf("Discard(10) = %d", n)
	}
	if p := rc.Pending(); !bytes.Equal(p, hello[10:]) || rc.Buffered() != len(hello)-10 {
		t.Fatalf("after Discard(10): Pending %d bytes, Buffered %d; want %d", len(p), rc.Buffered(), len(hello)-10)
	}
	if n := rc.Discard(1 << 20); n != len(hello)-10 {
		t.Fatalf("Discard past the end = %d, want %d", n, len(hello)-10)
	}
	if rc.Pending() != nil || rc.Discard(1) != 0 || rc.Discard(-1) != 0 {
		t.Fatal("bytes left after discarding them all")
	}
	// The socket itself, both ways.
	if _, err := client.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(rc, got); err != nil || string(got) != "after" {
		t.Fatalf("read %q, %v; want what the client sent next", got, err)
	}
	if _, err := rc.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "reply" {
		t.Fatalf("client read %q, %v", got, err)
	}
	// Deadlines hold on the raw path as on net.Conn.
	if err := rc.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
		t.Fatalf("Read past the deadline: %v", err)
	}
	client.Close()
	if err := rc.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(got); err != io.EOF {
		t.Fatalf("Read after the client closed: %v, want io.EOF", err)
	}
}
