package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// testSealedKeys are keys as DeriveSealedKeys would give both ends.
func testSealedKeys(t testing.TB) SealedKeys {
	var k SealedKeys
	rand.Read(k.agentToCloud[:])
	rand.Read(k.cloudToAgent[:])
	rand.Read(k.Binding[:])
	return k
}

// sealedPair is an agent's and a cloud's sealed transport over loopback TCP
// (or over the given connections).
func sealedPair(t testing.TB, an, cn net.Conn) (agent, cloud *sealedConn) {
	t.Helper()
	if an == nil {
		an, cn = testtools.TCPPair(t)
	}
	k := testSealedKeys(t)
	a, err := SealedConn(an, k, true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := SealedConn(cn, k, false)
	if err != nil {
		t.Fatal(err)
	}
	return a.(*sealedConn), c.(*sealedConn)
}

// pooledFrame is frame p in a framePool buffer, frameHeadroom bytes in, as
// the session writer hands it to writeWithHeadroom.
func pooledFrame(p []byte) (*[]byte, []byte) {
	bp := framePool.Get().(*[]byte)
	*bp = append((*bp)[:frameHeadroom], p...)
	return bp, *bp
}

func randomFrame(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestSealedFramesBothWays sends frames of every kind of size both ways, as
// single records, batches that mix small frames and pooled bulk frames, and
// pairs, and checks that each side reads exactly the frames sent, in order,
// and that a bulk frame alone in its record is handed over with its buffer.
func TestSealedFramesBothWays(t *testing.T) {
	agent, cloud := sealedPair(t, nil, nil)
	ctx := context.Background()
	type sent struct {
		frame []byte
		alone bool // the last (or only) frame of its record
	}
	// send writes the frames and passes each on as it goes, for check to
	// read while the writer writes.
	send := func(w *sealedConn, ch chan<- sent) {
		defer close(ch)
		var out []sent
		push := func() {
			for _, s := range out {
				ch <- s
			}
			out = out[:0]
		}
		defer push()
		// held are the pooled frames of a batch, written from their
		// buffers at endBatch and only then given back.
		var held []*[]byte
		small := func(n int, alone bool) bool {
			f := randomFrame(n)
			if err := w.WriteMessage(ctx, f); err != nil {
				t.Error(err)
				return false
			}
			out = append(out, sent{f, alone})
			return true
		}
		pooled := func(n int) bool {
			p := randomFrame(n)
			bp, buf := pooledFrame(p)
			held = append(held, bp)
			if err := w.writeWithHeadroom(ctx, buf); err != nil {
				t.Error(err)
				return false
			}
			out = append(out, sent{p, true})
			return true
		}
		release := func() {
			for _, bp := range held {
				framePool.Put(bp)
			}
			held = held[:0]
			push()
		}
		// A small frame, then a pooled bulk frame, each on its own.
		if !small(5, true) || !pooled(MaxFrameSize) {
			return
		}
		release()
		// A batch: small frames, a pooled frame, small frames filling
		// more than one record (3 of 30 KiB: two records), a pooled
		// frame last.
		if !w.beginBatch() {
			t.Error("no batching")
			return
		}
		for _, step := range []struct {
			size         int
			pooled       bool
			lastInRecord bool
		}{
			{100, false, false}, {100, false, false}, {100, false, true}, {40 << 10, true, true},
			{30 << 10, false, false}, {30 << 10, false, true}, {30 << 10, false, true}, {MaxFrameSize - 1, true, true},
		} {
			ok := false
			if step.pooled {
				ok = pooled(step.size)
			} else {
				ok = small(step.size, step.lastInRecord)
			}
			if !ok {
				return
			}
		}
		if err := w.endBatch(); err != nil {
			t.Error(err)
			return
		}
		release()
		// An Initiator and its early data in one record.
		a, b := randomFrame(60), randomFrame(517)
		if err := w.writePair(a, b); err != nil {
			t.Error(err)
			return
		}
		out = append(out, sent{a, false}, sent{b, true})
	}
	check := func(r *sealedConn, want <-chan sent) {
		i := -1
		for s := range want {
			i++
			got, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if !bytes.Equal(got, s.frame) {
				t.Fatalf("frame %d: %d bytes differ from the %d sent", i, len(got), len(s.frame))
			}
			kept := r.keepFrame()
			if (kept != nil) != s.alone {
				t.Fatalf("frame %d: buffer handed over %v, want %v", i, kept != nil, s.alone)
			}
			if kept != nil {
				// The frame stays valid in the kept buffer.
				if !bytes.Equal(got, s.frame) {
					t.Fatalf("frame %d changed in its kept buffer", i)
				}
				framePool.Put(kept)
			}
		}
	}
	for _, dir := range []struct{ w, r *sealedConn }{{agent, cloud}, {cloud, agent}} {
		// The agent's direction first: the cloud writes only after the
		// agent's first record.
		want := make(chan sent, 100)
		go send(dir.w, want)
		check(dir.r, want)
	}
}

// TestSealedCloudWaitsForTheAgent: the cloud's first record waits until the
// agent's first record was read, so that it cannot follow the 101 into the
// agent's TLS reader.
func TestSealedCloudWaitsForTheAgent(t *testing.T) {
	agent, cloud := sealedPair(t, nil, nil)
	ctx := context.Background()
	wrote := make(chan error, 1)
	go func() { wrote <- cloud.WriteMessage(ctx, []byte("hello agent")) }()
	select {
	case err := <-wrote:
		t.Fatalf("the cloud wrote before hearing from the agent (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := agent.WriteMessage(ctx, []byte("hello cloud")); err != nil {
		t.Fatal(err)
	}
	if got, err := cloud.ReadMessage(ctx); err != nil || string(got) != "hello cloud" {
		t.Fatalf("cloud read %q, %v", got, err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if got, err := agent.ReadMessage(ctx); err != nil || string(got) != "hello agent" {
		t.Fatalf("agent read %q, %v", got, err)
	}
	// A cloud closed before it heard anything gives up its write.
	_, cloud2 := sealedPair(t, nil, nil)
	go func() { wrote <- cloud2.WriteMessage(ctx, []byte("x")) }()
	time.Sleep(20 * time.Millisecond)
	cloud2.Close()
	select {
	case err := <-wrote:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting write outlived Close")
	}
}

// sealedRecords returns the bytes of records the agent seals for frames.
func sealedRecords(t *testing.T, k SealedKeys, frames ...[]byte) []byte {
	t.Helper()
	a, b := net.Pipe()
	w, err := SealedConn(a, k, true)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		out <- all
	}()
	for _, f := range frames {
		if err := w.WriteMessage(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	return <-out
}

// readAllFrames reads frames from a cloud's sealed transport over the bytes
// in until an error.
func readAllFrames(t *testing.T, k SealedKeys, in []byte) ([][]byte, error) {
	t.Helper()
	a, b := net.Pipe()
	r, err := SealedConn(b, k, false)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		a.Write(in)
		a.Close()
	}()
	defer r.Close()
	var frames [][]byte
	for {
		f, err := r.ReadMessage(context.Background())
		if err != nil {
			return frames, err
		}
		frames = append(frames, bytes.Clone(f))
	}
}

// TestSealedRecordsRejectTampering: a record that is altered, replayed,
// dropped, reordered, sent back the other way or cut short ends the
// transport with an error, and no frame of it is read.
func TestSealedRecordsRejectTampering(t *testing.T) {
	k := testSealedKeys(t)
	one, two := []byte("first frame"), []byte("second frame")
	recs := sealedRecords(t, k, one, two)
	n1 := recordHeaderLen + int(binary.BigEndian.Uint32(recs))
	r1, r2 := recs[:n1], recs[n1:]

	frames, err := readAllFrames(t, k, recs)
	if !errors.Is(err, io.EOF) || len(frames) != 2 || !bytes.Equal(frames[0], one) || !bytes.Equal(frames[1], two) {
		t.Fatalf("untouched records: %q, %v", frames, err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(recs)
		b[i] ^= 0x40
		return b
	}
	for name, c := range map[string]struct {
		in   []byte
		good int // frames read before the failure
	}{
		"first record's body":   {flip(recordHeaderLen + 2), 0},
		"first record's tag":    {flip(n1 - 1), 0},
		"second record's body":  {flip(n1 + recordHeaderLen + 1), 1},
		"replayed record":       {append(bytes.Clone(recs), r2...), 2},
		"dropped record":        {bytes.Clone(r2), 0},
		"reordered records":     {append(bytes.Clone(r2), r1...), 0},
		"cut inside the second": {recs[:len(recs)-3], 1},
	} {
		frames, err := readAllFrames(t, k, c.in)
		if len(frames) != c.good {
			t.Errorf("%s: %d frames read, want %d", name, len(frames), c.good)
		}
		if err == nil || errors.Is(err, io.EOF) {
			t.Errorf("%s: ended with %v, want a failure", name, err)
		}
	}
	// The agent's own records, sent back to it, are not the cloud's.
	a, b := net.Pipe()
	ag, _ := SealedConn(b, k, true)
	go func() { a.Write(recs); a.Close() }()
	if f, err := ag.ReadMessage(context.Background()); !errors.Is(err, ErrProtocol) {
		t.Errorf("reflected record: %q, %v", f, err)
	}
	// Another connection's keys open nothing.
	if frames, err := readAllFrames(t, testSealedKeys(t), recs); len(frames) != 0 || !errors.Is(err, ErrProtocol) {
		t.Errorf("other keys: %q, %v", frames, err)
	}
}

// TestSealedRecordLengths: lengths out of bounds fail before any read of
// the body.
func TestSealedRecordLengths(t *testing.T) {
	k := testSealedKeys(t)
	for _, c := range []struct {
		n    uint32
		want error
	}{
		{maxRecordLen + 1, ErrFrameTooLarge},
		{1 << 31, ErrFrameTooLarge},
		{sealTagLen, ErrProtocol},
		{0, ErrProtocol},
	} {
		in := binary.BigEndian.AppendUint32(nil, c.n)
		if _, err := readAllFrames(t, k, in); !errors.Is(err, c.want) {
			t.Errorf("length %d: %v, want %v", c.n, err, c.want)
		}
	}
}

// TestSealedRekey carries records across two key changes and checks that
// the key does change.
func TestSealedRekey(t *testing.T) {
	agent, cloud := sealedPair(t, nil, nil)
	ctx := context.Background()
	agent.w.seq = sealedRekeyRecords - 2
	cloud.r.seq = sealedRekeyRecords - 2
	first := agent.w.secret
	for i := range 5 {
		msg := []byte{byte(i), 1, 2, 3}
		if err := agent.WriteMessage(ctx, msg); err != nil {
			t.Fatal(err)
		}
		got, err := cloud.ReadMessage(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("record %d: %v, %v", i, got, err)
		}
	}
	if agent.w.secret == first || agent.w.secret != cloud.r.secret {
		t.Fatal("the secret did not move to the next one on both sides")
	}
	// A reader that did not rekey cannot read on.
	cloud.r.seq = sealedRekeyRecords + 10
	if err := agent.WriteMessage(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := cloud.ReadMessage(ctx); !errors.Is(err, ErrProtocol) {
		t.Fatalf("out of step: %v", err)
	}
}

// heldCheckConn calls check in each Read that blocks for a record's length
// (a read into the small pending array), on the reading goroutine.
type heldCheckConn struct {
	net.Conn
	check func()
}

func (c *heldCheckConn) Read(p []byte) (int, error) {
	if len(p) <= readAhead {
		c.check()
	}
	return c.Conn.Read(p)
}

// TestSealedIdleHoldsNoBuffer: a transport waiting for a record holds no
// pooled buffer (an idle session's memory).
func TestSealedIdleHoldsNoBuffer(t *testing.T) {
	an, cn := testtools.TCPPair(t)
	hc := &heldCheckConn{Conn: cn}
	agent, cloud := sealedPair(t, an, hc)
	var holding []bool
	hc.check = func() { holding = append(holding, cloud.rec != nil) }
	ctx := context.Background()
	for range 3 {
		if err := agent.WriteMessage(ctx, randomFrame(MaxFrameSize)); err != nil {
			t.Fatal(err)
		}
		if _, err := cloud.ReadMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	agent.Close()
	if _, err := cloud.ReadMessage(ctx); err == nil {
		t.Fatal("read after the peer closed succeeded")
	}
	if len(holding) < 2 {
		t.Fatalf("%d waits for a record's length", len(holding))
	}
	for i, h := range holding {
		if h {
			t.Errorf("wait %d: the reader held its last record's buffer", i)
		}
	}
}

// FuzzSealedRead feeds a cloud's sealed reader records sealed with its keys
// and then changed by the fuzzer: it must return only frames that were
// sealed, and fail cleanly on anything else.
func FuzzSealedRead(f *testing.F) {
	var k SealedKeys
	for i := range k.agentToCloud {
		k.agentToCloud[i] = byte(i)
	}
	seedConn, seedPeer := net.Pipe()
	w, _ := SealedConn(seedConn, k, true)
	out := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(seedPeer)
		out <- all
	}()
	sent := [][]byte{[]byte("a"), bytes.Repeat([]byte("b"), 300), []byte("c")}
	for _, p := range sent {
		_ = w.WriteMessage(context.Background(), p)
	}
	seedConn.Close()
	valid := <-out
	f.Add(valid, uint(0), byte(0))
	f.Add(valid, uint(5), byte(1))
	f.Add(valid[:10], uint(0), byte(0))
	f.Fuzz(func(t *testing.T, in []byte, at uint, x byte) {
		b := bytes.Clone(in)
		if len(b) > 0 {
			b[at%uint(len(b))] ^= x
		}
		a, c := net.Pipe()
		r, _ := SealedConn(c, k, false)
		go func() {
			a.Write(b)
			a.Close()
		}()
		for i := 0; ; i++ {
			got, err := r.ReadMessage(context.Background())
			if err != nil {
				break
			}
			if i >= len(sent) || !bytes.Equal(got, sent[i]) {
				t.Fatalf("frame %d read that was never sealed: %q", i, got)
			}
		}
		r.Close()
	})
}
