package tunnel

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// recordingConn records each Write it is given.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func TestBatchConnCoalescesOneBatch(t *testing.T) {
	rec := &recordingConn{}
	bc := NewBatchConn(rec)

	// Outside a batch, every write goes through as it comes.
	bc.Write([]byte("hello"))
	if len(rec.writes) != 1 || string(rec.writes[0]) != "hello" {
		t.Fatalf("pass-through writes %q", rec.writes)
	}

	bc.Begin()
	for i := range 16 {
		chunk := bytes.Repeat([]byte{byte('a' + i)}, 4096)
		if n, err := bc.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("batched write: %d, %v", n, err)
		}
	}
	if len(rec.writes) != 1 {
		t.Fatalf("%d writes reached the network before Flush", len(rec.writes)-1)
	}
	if err := bc.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 2 || len(rec.writes[1]) != 16*4096 {
		t.Fatalf("after Flush: %d writes, last of %d bytes", len(rec.writes), len(rec.writes[len(rec.writes)-1]))
	}
	for i := range 16 {
		if rec.writes[1][i*4096] != byte('a'+i) {
			t.Fatalf("chunk %d out of order", i)
		}
	}

	// An empty batch writes nothing; after it, writes pass through again.
	bc.Begin()
	bc.Flush()
	bc.Write([]byte("bye"))
	if len(rec.writes) != 3 || string(rec.writes[2]) != "bye" {
		t.Fatalf("writes after an empty batch %q", rec.writes[2:])
	}
}

func TestBatchConnDropsAnOversizedBuffer(t *testing.T) {
	bc := NewBatchConn(&recordingConn{})
	bc.Begin()
	bc.Write(make([]byte, 2*maxBatchKeep))
	bc.Flush()
	if bc.buf != nil {
		t.Fatalf("kept a %d-byte buffer", cap(bc.buf))
	}
	bc.Begin()
	bc.Write(make([]byte, 1000))
	bc.Flush()
	if cap(bc.buf) == 0 || len(bc.buf) != 0 {
		t.Fatalf("a frame-sized buffer is reused: len %d cap %d", len(bc.buf), cap(bc.buf))
	}
}

// A full batch built of TLS records, as the session writer makes under a
// bulk transfer, keeps its buffer: append leaves it with more capacity than
// maxBatchKeep, and dropping it made every such batch grow a new one.
func TestBatchConnKeepsAFullBatchBuffer(t *testing.T) {
	bc := NewBatchConn(&recordingConn{})
	record := make([]byte, 16<<10+22)
	for range 2 {
		bc.Begin()
		for n := 0; n < maxBatchBytes+MaxFrameSize; n += len(record) {
			bc.Write(record)
		}
		bc.Flush()
		if bc.buf == nil {
			t.Fatal("dropped the buffer of a full batch")
		}
	}
}
