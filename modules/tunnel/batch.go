package tunnel

import (
	"net"
	"sync"
)

// maxBatchKeep is the largest write buffer a BatchConn keeps between
// batches: the session writer's largest batch of frames (maxBatchBytes and
// the frame that crosses it) with their framing fits, so a busy session
// reuses one buffer, and an occasional larger batch is not kept.
const maxBatchKeep = maxBatchBytes + MaxFrameSize + 8<<10

// BatchConn sits under the TLS connection that carries a client's WebSocket
// and turns the writes of one frame into one write to the network.
//
// A WebSocket client must mask what it sends, and coder/websocket masks
// through a 4 KiB buffer, flushing each 4 KiB as its own TLS record and
// system call: sixteen of each per 64 KiB Data frame, which made the
// agent's sends, and the cloud's reads, the tunnel's bottleneck. Between
// Begin and Flush (WebSocketClientConn brackets each frame with them) writes
// collect in memory; Flush sends them at once. Outside a bracket, writes go
// straight through, so the TLS handshake and frames that the WebSocket
// library writes on its own (pongs, close) are not held back.
type BatchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      []byte
}

// NewBatchConn wraps c; it starts passing writes straight through.
func NewBatchConn(c net.Conn) *BatchConn { return &BatchConn{Conn: c} }

// Write collects p while a batch is open, and writes it through otherwise.
func (b *BatchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.batching {
		return b.Conn.Write(p)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Begin opens a batch.
func (b *BatchConn) Begin() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// Flush closes the batch and writes what it collected in one call.
func (b *BatchConn) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	// The batch's length, not the buffer's capacity, decides: append
	// grows a buffer by a quarter at a time, so one that reached a full
	// batch has more than maxBatchKeep of capacity, and dropping it made
	// every full batch grow a new one from nothing, copying it ten times.
	if len(b.buf) > maxBatchKeep {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
	return err
}
