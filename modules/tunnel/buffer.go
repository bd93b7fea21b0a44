package tunnel

import "sync"

// chunkSize is the unit in which a stream buffers received data. Small Data
// is packed into chunks whatever the frame sizes, so a stream's memory is its
// buffered byte count rounded up to chunks, even if a peer sends one-byte
// frames; and drained chunks go back to a shared pool, so an idle stream
// holds none.
const chunkSize = 16 << 10

// keepFrameMin is the smallest Data payload that a stream keeps in the
// frame it arrived in instead of copying it into chunks: the transport hands
// over the frame's pooled buffer (see frameKeeper), which goes back to the
// pool once the bytes are read. A bulk transfer's 64 KiB frames then cross
// the cloud without the copy that was a fifth of its CPU. Smaller payloads
// are copied: a frame buffer holds MaxFrameSize whatever it carries, and at
// half of it or more a stream's memory stays under twice what it buffers.
const keepFrameMin = MaxFrameSize / 2

type chunk [chunkSize]byte

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// segment is a run of buffered bytes: data is the unread part, in a pooled
// chunk (c, with data's capacity reaching the chunk's end, so later small
// Data is appended in place) or in a kept frame buffer (f, data's capacity
// ending with it).
type segment struct {
	data []byte
	c    *chunk
	f    *[]byte
}

func (s segment) release() {
	switch {
	case s.c != nil:
		chunkPool.Put(s.c)
	case s.f != nil:
		framePool.Put(s.f)
	}
}

// recvBuffer is a FIFO of bytes made of pooled chunks and kept frames. The
// stream's mutex guards it.
type recvBuffer struct {
	segs []segment
	n    int // bytes buffered
}

func (b *recvBuffer) len() int { return b.n }

// write copies p into chunks.
func (b *recvBuffer) write(p []byte) {
	for len(p) > 0 {
		last := len(b.segs) - 1
		if last < 0 || b.segs[last].c == nil || len(b.segs[last].data) == cap(b.segs[last].data) {
			c := chunkPool.Get().(*chunk)
			b.segs = append(b.segs, segment{data: c[:0:chunkSize], c: c})
			last++
		}
		s := &b.segs[last]
		n := min(cap(s.data)-len(s.data), len(p))
		s.data = append(s.data, p[:n]...)
		b.n += n
		p = p[n:]
	}
}

// keep queues p, which lies in the pooled frame buffer f, without copying
// it; the buffer now belongs to b.
func (b *recvBuffer) keep(f *[]byte, p []byte) {
	b.segs = append(b.segs, segment{data: p[:len(p):len(p)], f: f})
	b.n += len(p)
}

func (b *recvBuffer) read(p []byte) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		s := &b.segs[0]
		n := copy(p, s.data)
		s.data = s.data[n:]
		b.n -= n
		total += n
		p = p[n:]
		if len(s.data) == 0 {
			// Drained, even a chunk with room left: an idle stream
			// holds none.
			b.pop().release()
		}
	}
	return total
}

// take removes the first segment, which the caller releases once it is
// done with its data.
func (b *recvBuffer) take() segment {
	s := b.pop()
	b.n -= len(s.data)
	return s
}

// pop removes the first segment. It shifts rather than reslices, so that
// the slice keeps its capacity (a window's worth) and a busy stream does not
// reallocate it for every burst.
func (b *recvBuffer) pop() segment {
	s := b.segs[0]
	last := len(b.segs) - 1
	copy(b.segs, b.segs[1:])
	b.segs[last] = segment{}
	b.segs = b.segs[:last]
	return s
}

// free returns every buffer to its pool and forgets the buffered bytes.
func (b *recvBuffer) free() {
	for _, s := range b.segs {
		s.release()
	}
	*b = recvBuffer{}
}
