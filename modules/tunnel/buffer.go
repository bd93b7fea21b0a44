package tunnel

import "sync"

// chunkSize is the unit in which a stream buffers received data. Data is
// packed into chunks whatever the frame sizes, so a stream's memory is its
// buffered byte count rounded up to chunks, even if a peer sends one-byte
// frames; and drained chunks go back to a shared pool, so an idle stream
// holds none.
const chunkSize = 16 << 10

type chunk [chunkSize]byte

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// recvBuffer is a FIFO of bytes made of pooled chunks. The stream's mutex
// guards it.
type recvBuffer struct {
	chunks []*chunk
	r      int // read offset in chunks[0]
	w      int // write offset in the last chunk
	n      int // bytes buffered
}

func (b *recvBuffer) len() int { return b.n }

func (b *recvBuffer) write(p []byte) {
	for len(p) > 0 {
		if len(b.chunks) == 0 || b.w == chunkSize {
			b.chunks = append(b.chunks, chunkPool.Get().(*chunk))
			b.w = 0
		}
		n := copy(b.chunks[len(b.chunks)-1][b.w:], p)
		b.w += n
		b.n += n
		p = p[n:]
	}
}

func (b *recvBuffer) read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		end := chunkSize
		if len(b.chunks) == 1 {
			end = b.w
		}
		n := copy(p, b.chunks[0][b.r:end])
		b.r += n
		b.n -= n
		total += n
		p = p[n:]
		if b.r == end {
			chunkPool.Put(b.chunks[0])
			// Shift rather than reslice, so that the slice keeps its
			// capacity (a window's worth of pointers) and a busy stream
			// does not reallocate it for every burst.
			last := len(b.chunks) - 1
			copy(b.chunks, b.chunks[1:])
			b.chunks[last] = nil
			b.chunks = b.chunks[:last]
			b.r = 0
			if last == 0 {
				b.w = 0
			}
		}
	}
	return total
}

// free returns every chunk to the pool and forgets the buffered bytes.
func (b *recvBuffer) free() {
	for i, c := range b.chunks {
		chunkPool.Put(c)
		b.chunks[i] = nil
	}
	*b = recvBuffer{}
}
