//go:build unix

package relay

import (
	"io"
	"net"
	"testing"
	"time"
)

// TryWrite on a TCP socket whose peer does not read takes what the send
// buffer holds and returns at once instead of waiting; the peer then reads
// exactly those bytes.
func TestTryWriteNeverBlocks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	tw, ok := withTry(&errWriter{w: c}, nil).(*tryConn)
	if !ok {
		t.Fatal("a TCP conn got no TryWrite")
	}
	p := make([]byte, 64<<20) // far more than loopback's socket buffers
	done := make(chan int, 1)
	go func() {
		n, err := tw.TryWrite(p)
		if err != nil {
			t.Errorf("TryWrite: %v", err)
		}
		done <- n
	}()
	var n int
	select {
	case n = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("TryWrite blocked on a full socket")
	}
	if n <= 0 || n >= len(p) {
		t.Fatalf("TryWrite wrote %d of %d bytes to a socket nobody reads", n, len(p))
	}
	c.Close()
	got, err := io.Copy(io.Discard, peer)
	if err != nil || got != int64(n) {
		t.Fatalf("peer read %d bytes (%v), TryWrite reported %d", got, err, n)
	}
}
