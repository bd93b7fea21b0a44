//go:build unix

package relay

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
	"github.com/gatehouse-project/gatehouse/modules/clienthello"
	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// TryWrite on a TCP socket whose peer does not read takes what the send
// buffer holds and returns at once instead of waiting; the peer then reads
// exactly those bytes.
func TestTryWriteNeverBlocks(t *testing.T) {
	c, peer := testtools.TCPPair(t)

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

// WriteBuffers reaches the socket under a clienthello.Conn and writes every
// buffer, in order, even when they are far larger than the socket's send
// buffer (writev's partial writes are resumed).
func TestWriteBuffersWritesAll(t *testing.T) {
	c, peer := testtools.TCPPair(t)

	w, ok := withTry(&errWriter{w: &clienthello.Conn{Conn: c}}, nil).(tunnel.BuffersWriter)
	if !ok {
		t.Fatal("a TCP conn behind a clienthello.Conn got no WriteBuffers")
	}
	var want []byte
	var v [][]byte
	for i, size := range []int{3 << 20, 1, 64 << 10, 5 << 20} {
		b := bytes.Repeat([]byte{byte('a' + i)}, size)
		want = append(want, b...)
		v = append(v, b)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	n, err := w.WriteBuffers(v)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("WriteBuffers wrote %d of %d bytes: %v", n, len(want), err)
	}
	c.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer read %d bytes, not the %d written in order", len(b), len(want))
	}
}
