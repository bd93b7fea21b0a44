package tunnel

import (
	"io"
	"testing"
	"time"
)

// A reader that keeps up grows its window toward MaxStreamWindow; a reader
// that does not read never does, so the memory it pins stays one window.
func TestWindowGrowsOnlyForAReaderThatKeepsUp(t *testing.T) {
	const start, limit = 64 << 10, 1 << 20
	srv, cli := pair(t, Config{}, Config{StreamWindow: start, MaxStreamWindow: limit})
	streams := make(chan *Stream, 2)
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		streams <- st
		select {
		case <-st.done:
		case <-st.sess.done:
		}
	})
	ctx := testCtx(t)

	fast, err := srv.Open(ctx, Initiator{Gatename: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	fastRecv := <-streams
	go func() { _, _ = fast.Write(make([]byte, 16<<20)); _ = fast.CloseWrite() }()
	if n, err := io.Copy(io.Discard, fastRecv); err != nil || n != 16<<20 {
		t.Fatalf("bulk transfer: %d bytes, %v", n, err)
	}
	fastRecv.mu.Lock()
	grown := fastRecv.window
	fastRecv.mu.Unlock()
	if grown != limit {
		t.Fatalf("window of a reader that kept up: %d, want it grown to %d", grown, limit)
	}

	slow, err := srv.Open(ctx, Initiator{Gatename: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slowRecv := <-streams
	go func() { _, _ = slow.Write(make([]byte, 4<<20)) }()
	time.Sleep(300 * time.Millisecond) // the sender fills the window and waits
	slowRecv.mu.Lock()
	buffered, window := slowRecv.buf.len(), slowRecv.window
	slowRecv.mu.Unlock()
	if window != start || int64(buffered) > start {
		t.Fatalf("a stalled reader has window %d and %d bytes buffered, want %d at most", window, buffered, start)
	}
}
