package proxy

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// sizesConn records the size of each write that reaches the stream below
// recordConn, over a real pipe whose other end is read to the end.
type sizesConn struct {
	net.Conn
	mu    sync.Mutex
	sizes []int
}

func (c *sizesConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.sizes = append(c.sizes, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *sizesConn) writes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.sizes...)
}

func TestRecordConnMergesFullRecords(t *testing.T) {
	a, b := net.Pipe()
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	sc := &sizesConn{Conn: a}
	rc := newRecordConn(sc)
	var want []byte
	write := func(n int) {
		p := bytes.Repeat([]byte{byte(len(want))}, n)
		want = append(want, p...)
		if _, err := rc.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	// A small record with nothing buffered goes out at once.
	write(100)
	if w := sc.writes(); len(w) != 1 || w[0] != 100 {
		t.Fatalf("small record: writes %v", w)
	}
	// Three full records wait and leave as one write when a fourth would
	// not fit in a Data frame.
	full := fullRecord + 22
	for range 4 {
		write(full)
	}
	if w := sc.writes(); len(w) != 2 || w[1] != 3*full {
		t.Fatalf("full records: writes %v", w)
	}
	// A short record ends the write: it goes out with the one buffered.
	write(500)
	if w := sc.writes(); len(w) != 3 || w[2] != full+500 {
		t.Fatalf("end of a write: writes %v", w)
	}
	// A full record at the end of a body leaves after the delay.
	write(full)
	deadline := time.Now().Add(5 * time.Second)
	for len(sc.writes()) != 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if w := sc.writes(); len(w) != 4 || w[3] != full {
		t.Fatalf("last full record: writes %v", w)
	}
	for _, n := range sc.writes() {
		if n > tunnel.MaxDataSize {
			t.Fatalf("a write of %d bytes, more than a Data frame", n)
		}
	}
	// Close sends what is still buffered.
	write(full)
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if all := <-got; !bytes.Equal(all, want) {
		t.Fatalf("the stream got %d bytes, want %d in order", len(all), len(want))
	}
}
