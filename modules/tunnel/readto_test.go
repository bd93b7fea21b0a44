package tunnel

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"
)

// ReadTo passes on every byte in order, whether it was kept in its frame
// (large Data) or copied into chunks (small Data), over both transports, and
// grants the window back exactly: a transfer many windows long completes.
func TestReadToKeepsOrderAndCredit(t *testing.T) {
	for name, conns := range map[string]func(testing.TB) (Conn, Conn){"websocket": wsPair, "raw": rawPair} {
		t.Run(name, func(t *testing.T) {
			sc, cc := conns(t)
			srv, cli := sessionsOver(t, sc, cc, Config{}, Config{})
			// Writes of mixed sizes: whole frames, which the receiver keeps,
			// and small pieces, which it copies.
			want := randomBytes(8 * DefaultMaxWindow)
			st := openSending(t, srv, cli, want, MaxDataSize, 100, keepFrameMin, 3*MaxDataSize, 1)
			var got bytes.Buffer
			for {
				_, err := st.ReadTo(&got)
				if err != nil {
					break
				}
			}
			mustEqual(t, got.Bytes(), want)
			st.mu.Lock()
			if st.buf.len() != 0 || len(st.buf.segs) != 0 {
				t.Errorf("drained stream keeps %d bytes in %d segments", st.buf.len(), len(st.buf.segs))
			}
			st.mu.Unlock()
		})
	}
}

// piecesReader returns its data in reads of the given sizes, in turn.
type piecesReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *piecesReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), r.sizes[r.i%len(r.sizes)])
	r.i++
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// WriteFrom sends what each read returns as a Data frame, bin8 and bin16
// payloads alike, in order, within the peer's window.
func TestWriteFromSendsEachRead(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	want := randomBytes(3 * DefaultMaxWindow)
	got := make(chan []byte, 1)
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		all, _ := io.ReadAll(st)
		got <- all
		st.Close()
	})
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := &piecesReader{data: want, sizes: []int{1, 255, 256, 300, MaxDataSize, 7000}}
	for {
		_, rerr, werr := st.WriteFrom(r)
		if werr != nil {
			t.Fatal(werr)
		}
		if rerr == io.EOF {
			break
		}
	}
	st.CloseWrite()
	mustEqual(t, <-got, want)
}

// tryBuffer is a TryWriter over a buffer that counts what its TryWrites
// took and signals each one. Its methods may run on the session's reader.
type tryBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	tried int
	wrote chan struct{}
}

func (b *tryBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *tryBuffer) TryWrite(p []byte) (int, error) {
	b.mu.Lock()
	b.tried += len(p)
	n, err := b.buf.Write(p)
	b.mu.Unlock()
	select {
	case b.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (b *tryBuffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// Small Data that arrives while ReadTo waits on a TryWriter is written by
// the session's reader, without waking ReadTo: a request/response exchange
// leaves ReadTo waiting, and the TryWriter counts what it took.
func TestReadToTryWritesSmallData(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	serve(t, cli, echo)
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := &tryBuffer{wrote: make(chan struct{}, 1)}
	type result struct {
		returns int
		n       int
		err     error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for {
			n, err := st.ReadTo(w)
			r.n += n
			if err != nil {
				r.err = err
				done <- r
				return
			}
			r.returns++
		}
	}()
	var want []byte
	for i := range 50 {
		msg := []byte("request " + string(rune('a'+i%26)))
		want = append(want, msg...)
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		for w.len() < len(want) {
			select {
			case <-w.wrote:
			case <-time.After(100 * time.Millisecond): // a Write by ReadTo signals nothing
			}
		}
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != io.EOF {
		t.Fatalf("ReadTo ended with %v, want EOF", r.err)
	}
	mustEqual(t, w.buf.Bytes(), want)
	if w.tried == 0 {
		t.Fatal("no data went through TryWrite")
	}
	if r.n+w.tried != len(want) {
		t.Errorf("ReadTo returned %d bytes and TryWrite took %d, of %d", r.n, w.tried, len(want))
	}
	// Only data that arrived before ReadTo registered its TryWriter makes
	// it return; the 50 exchanges themselves must not.
	if r.returns > 2 {
		t.Errorf("ReadTo returned %d times for data TryWrite took", r.returns)
	}
}

// Bytes the session's reader passes on with TryWrite are granted back like
// those ReadTo writes: small writes many windows long all get through.
func TestReadToTryWriteGrantsCredit(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	want := randomBytes(8 * DefaultMaxWindow)
	st := openSending(t, srv, cli, want, 1000)
	w := &tryBuffer{wrote: make(chan struct{}, 1)}
	n := 0
	for {
		m, err := st.ReadTo(w)
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mustEqual(t, w.buf.Bytes(), want)
	if n+w.tried != len(want) || w.tried == 0 {
		t.Errorf("ReadTo returned %d bytes and TryWrite took %d, of %d", n, w.tried, len(want))
	}
}

// buffersRecorder is a BuffersWriter over a bytes.Buffer that remembers
// how many buffers each WriteBuffers call took.
type buffersRecorder struct {
	bytes.Buffer
	calls []int
}

func (r *buffersRecorder) WriteBuffers(v [][]byte) (int64, error) {
	r.calls = append(r.calls, len(v))
	var n int64
	for _, b := range v {
		m, _ := r.Write(b)
		n += int64(m)
	}
	return n, nil
}

// ReadTo hands the frames a stream has buffered to a BuffersWriter in one
// WriteBuffers call (bounded by maxWriteBuffers), in order, and the window
// accounting still grants every byte back: a transfer of many windows
// completes.
func TestReadToWritesBufferedFramesTogether(t *testing.T) {
	for name, conns := range map[string]func(testing.TB) (Conn, Conn){"websocket": wsPair, "raw": rawPair} {
		t.Run(name, func(t *testing.T) {
			sc, cc := conns(t)
			srv, cli := sessionsOver(t, sc, cc, Config{}, Config{})
			want := randomBytes(4 * DefaultMaxWindow)
			st := openSending(t, srv, cli, want)
			// Let the first window's frames queue up before reading.
			deadline := time.Now().Add(10 * time.Second)
			for {
				st.mu.Lock()
				n := st.buf.len()
				st.mu.Unlock()
				if n >= DefaultWindow || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			var got buffersRecorder
			for {
				if _, err := st.ReadTo(&got); err != nil {
					if err != io.EOF {
						t.Fatalf("ReadTo: %v", err)
					}
					break
				}
			}
			mustEqual(t, got.Bytes(), want)
			most := 0
			for _, n := range got.calls {
				if n > maxWriteBuffers {
					t.Errorf("one WriteBuffers call took %d buffers, more than %d", n, maxWriteBuffers)
				}
				most = max(most, n)
			}
			if most < 2 {
				t.Errorf("a window of buffered frames went out one per call (%d WriteBuffers calls)", len(got.calls))
			}
		})
	}
}

// openSending opens a stream from srv whose far end, served on cli, writes
// want in writes of the given sizes in turn (all in one write when none
// are given), then half-closes and waits for the stream's end. The stream
// is closed when the test ends.
func openSending(t *testing.T, srv, cli *Session, want []byte, sizes ...int) *Stream {
	t.Helper()
	if len(sizes) == 0 {
		sizes = []int{len(want)}
	}
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		p := want
		for i := 0; len(p) > 0; i++ {
			n := min(len(p), sizes[i%len(sizes)])
			if _, err := st.Write(p[:n]); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			p = p[n:]
		}
		st.CloseWrite()
		waitClosed(st)
	})
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
