package pagekite

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// A stream's buffer: what the kite delivers comes out of Read byte-exact
// across chunk and read sizes on both sides of the pooled capacity; unread
// data is moved to the front instead of growing the buffer; a drained
// stream holds no buffer; the limit counts only unread bytes.
func TestStreamBuffer(t *testing.T) {
	srv := &Server{}
	srv.init()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	s := newSession(srv, c1, nil, false)
	st := newStream(s, nil, 1, nil, nil)

	var sent, got []byte
	next := byte(0)
	deliver := func(n int) {
		t.Helper()
		p := make([]byte, n)
		for i := range p {
			p[i] = next
			next++
		}
		sent = append(sent, p...)
		if !st.deliver(p, 512<<10) {
			t.Fatalf("deliver of %d bytes refused", n)
		}
	}
	read := func(n int) {
		t.Helper()
		p := make([]byte, n)
		k, err := st.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p[:k]...)
	}
	drain := func() {
		t.Helper()
		for len(got) < len(sent) {
			read(32 << 10)
		}
		if !bytes.Equal(got, sent) {
			t.Fatal("read bytes differ from delivered bytes")
		}
		if st.buf != nil {
			t.Fatalf("a drained stream holds a buffer of %d bytes", cap(st.buf))
		}
	}

	// Chunks as PyPagekite sends them, each read out at once.
	for range 10 {
		deliver(16256)
		read(1 << 20)
	}
	drain()

	// Partly read, then more than fits behind the unread part: the unread
	// part moves to the front, and the pooled buffer is kept.
	deliver(40000)
	read(30000)
	deliver(40000)
	if cap(st.buf) != pooledBuf || st.off != 0 || len(st.buf) != 50000 {
		t.Fatalf("after the move: cap %d, off %d, len %d; want %d, 0, 50000", cap(st.buf), st.off, len(st.buf), pooledBuf)
	}
	drain()

	// Larger than the pool's buffers: a buffer of its own.
	deliver(3 * pooledBuf)
	read(100)
	deliver(1000)
	drain()

	// The limit is on unread bytes: read bytes no longer count.
	deliver(300 << 10)
	read(200 << 10)
	deliver(300 << 10) // 400 KiB unread, under 512
	drain()
	deliver(300 << 10)
	if st.deliver(make([]byte, 300<<10), 512<<10) {
		t.Fatal("600 KiB unread accepted over a 512 KiB limit")
	}
	if _, err := st.Read(make([]byte, 10)); !errors.Is(err, ErrStreamReset) {
		t.Fatalf("Read after the overrun: %v, want ErrStreamReset", err)
	}
	if st.buf != nil {
		t.Fatal("a reset stream holds a buffer")
	}
}
