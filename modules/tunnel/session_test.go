package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestDataBothWays(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	up := randomBytes(3<<20 + 17)
	down := randomBytes(2<<20 + 5)
	var gotInit Initiator
	var gotRemote net.Addr
	serve(t, cli, func(st *Stream) {
		gotInit = st.Initiator()
		gotRemote = st.RemoteAddr()
		if err := st.Ack(true, ""); err != nil {
			t.Error(err)
			return
		}
		got, err := io.ReadAll(st)
		if err != nil {
			t.Error(err)
			return
		}
		mustEqual(t, got, up)
		if _, err := st.Write(down); err != nil {
			t.Error(err)
		}
		_ = st.CloseWrite()
	})
	st, err := srv.Open(testCtx(t), Initiator{Ip: "10.0.0.2", Port: 443, Gatename: "myhome", ClientAddr: "203.0.113.7:50123"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := roundTrip(st, up)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, down)
	if gotInit.Gatename != "myhome" || gotInit.Ip != "10.0.0.2" || gotInit.Port != 443 || gotInit.ClientAddr != "203.0.113.7:50123" {
		t.Fatalf("acceptor saw initiator %#v", gotInit)
	}
	if gotRemote.String() != "203.0.113.7:50123" {
		t.Fatalf("acceptor RemoteAddr = %v, want the original client", gotRemote)
	}
	if st.RemoteAddr().String() != "10.0.0.2:443" {
		t.Fatalf("opener RemoteAddr = %v", st.RemoteAddr())
	}
}

// Both sides open streams over the same session.
func TestOpenFromBothSides(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	serve(t, cli, echo)
	serve(t, srv, echo)
	for _, s := range []*Session{srv, cli} {
		st, err := s.Open(testCtx(t), Initiator{Gatename: "peer"})
		if err != nil {
			t.Fatal(err)
		}
		p := randomBytes(100 << 10)
		got, err := roundTrip(st, p)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, got, p)
		st.Close()
	}
}

func TestHalfClose(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		req, err := io.ReadAll(st) // ends with the opener's CloseWrite
		if err != nil {
			t.Error(err)
			return
		}
		// Still writable after the peer's half-close.
		if _, err := fmt.Fprintf(st, "got %q", req); err != nil {
			t.Error(err)
		}
		st.CloseWrite()
		if _, err := st.Write([]byte("x")); !errors.Is(err, ErrStreamClosed) {
			t.Errorf("write after CloseWrite: %v, want ErrStreamClosed", err)
		}
	})
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("more")); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("write after CloseWrite: %v", err)
	}
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `got "ping"` {
		t.Fatalf("got %q", got)
	}
	// Both directions are finished: the stream is gone from both sessions.
	deadline := time.Now().Add(5 * time.Second)
	for srv.NumStreams()+cli.NumStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("streams left: server %d, client %d", srv.NumStreams(), cli.NumStreams())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close (not CloseWrite) makes the peer's writes fail and its reads end.
func TestCloseResetsPeer(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	result := make(chan error, 1)
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		if _, err := io.ReadAll(st); err != nil {
			result <- err
			return
		}
		var err error
		for err == nil {
			_, err = st.Write(make([]byte, 1024))
		}
		result <- err
	})
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("bye"))
	st.Close()
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	select {
	case err := <-result:
		if !errors.Is(err, ErrStreamReset) {
			t.Fatalf("peer write after our Close: %v, want ErrStreamReset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("peer writes never failed")
	}
}

func TestConcurrentStreams(t *testing.T) {
	const n = 1000
	srv, cli := pair(t, Config{}, Config{AcceptBacklog: n})
	serve(t, cli, echo)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := srv.Open(ctx, Initiator{Gatename: "g", Port: uint16(i)})
			if err != nil {
				errs <- err
				return
			}
			defer st.Close()
			p := randomBytes(8<<10 + i)
			got, err := roundTrip(st, p)
			if err != nil {
				errs <- err
				return
			}
			if string(got) != string(p) {
				errs <- fmt.Errorf("stream %d: echo differs", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// One stream whose reader stalls must not slow another stream down, nor
// make the receiving side buffer more than its window.
func TestStalledReaderDoesNotBlockOthers(t *testing.T) {
	const window = 64 << 10
	srv, cli := pair(t, Config{}, Config{StreamWindow: window})
	release := make(chan struct{})
	var releaseOnce sync.Once
	unstall := func() { releaseOnce.Do(func() { close(release) }) }
	defer unstall()
	stalledData := randomBytes(1 << 20)
	var stalled atomic.Pointer[Stream]
	stalledDone := make(chan []byte, 1)
	fastTotal := make(chan int64, 1)
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		switch st.Initiator().Gatename {
		case "stalled":
			stalled.Store(st)
			select {
			case <-release:
			case <-st.sess.done:
				return
			}
			got, _ := io.ReadAll(st)
			stalledDone <- got
		case "fast":
			n, _ := io.Copy(io.Discard, st)
			fastTotal <- n
		}
	})
	ctx := testCtx(t)
	slow, err := srv.Open(ctx, Initiator{Gatename: "stalled"})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	var slowWritten atomic.Int64
	slowErr := make(chan error, 1)
	go func() {
		// Small writes so that progress is observable.
		p := stalledData
		for len(p) > 0 {
			n, err := slow.Write(p[:min(len(p), 4096)])
			slowWritten.Add(int64(n))
			if err != nil {
				slowErr <- err
				return
			}
			p = p[n:]
		}
		slowErr <- slow.CloseWrite()
	}()
	// Wait until the stalled stream has used up its credit.
	deadline := time.Now().Add(10 * time.Second)
	for slowWritten.Load() < window {
		if time.Now().After(deadline) {
			t.Fatalf("stalled stream wrote only %d bytes", slowWritten.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}

	const fastSize = 16 << 20
	fast, err := srv.Open(ctx, Initiator{Gatename: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	start := time.Now()
	chunk := randomBytes(256 << 10)
	for sent := 0; sent < fastSize; sent += len(chunk) {
		if _, err := fast.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	fast.CloseWrite()
	select {
	case n := <-fastTotal:
		if n != fastSize {
			t.Fatalf("fast stream delivered %d bytes, want %d", n, fastSize)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("fast stream did not complete while the other was stalled")
	}
	elapsed := time.Since(start)
	t.Logf("16 MiB on the fast stream in %v (%.0f MiB/s) while the other stream is stalled", elapsed, fastSize/elapsed.Seconds()/(1<<20))

	// The stalled stream is still stalled, at its window.
	if w := slowWritten.Load(); w > window {
		t.Fatalf("stalled stream wrote %d bytes, more than the %d-byte window", w, window)
	}
	if st := stalled.Load(); st != nil {
		st.mu.Lock()
		buffered := st.buf.len()
		st.mu.Unlock()
		if buffered > window {
			t.Fatalf("receiver buffers %d bytes for the stalled stream, window %d", buffered, window)
		}
	}
	unstall()
	select {
	case got := <-stalledDone:
		mustEqual(t, got, stalledData)
	case <-time.After(20 * time.Second):
		t.Fatal("stalled stream did not finish once released")
	}
	if err := <-slowErr; err != nil {
		t.Fatal(err)
	}
}

// rawPeer drives one end of a WebSocket by hand, to play a misbehaving peer.
type rawPeer struct {
	t    testing.TB
	conn Conn
}

func (p rawPeer) send(m Message) {
	p.t.Helper()
	b, err := Encode(m)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.conn.WriteMessage(context.Background(), b); err != nil {
		p.t.Fatal(err)
	}
}

// next returns the next message other than a Ping or Pong.
func (p rawPeer) next() (Message, error) {
	for {
		b, err := p.conn.ReadMessage(context.Background())
		if err != nil {
			return nil, err
		}
		m, err := Decode(b)
		if err != nil {
			return nil, err
		}
		switch m.(type) {
		case Ping, Pong:
			continue
		}
		return m, nil
	}
}

func TestCreditViolationClosesSession(t *testing.T) {
	const window = 32 << 10
	sc, cc := wsPair(t)
	srv, err := NewSession(sc, Config{StreamWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	serve(t, srv, func(st *Stream) {
		st.Ack(true, "")
		waitClosed(st) // never read: the peer must respect the window on its own
	})
	peer := rawPeer{t, cc}
	g := NewGUID()
	peer.send(Initiator{GUID: g, Gatename: "g"})
	m, err := peer.next()
	if err != nil {
		t.Fatal(err)
	}
	ack, ok := m.(Ack)
	if !ok || !ack.Ok || ack.GUID != g || ack.Window != window {
		t.Fatalf("got %#v, want an Ack of the stream with window %d", m, window)
	}
	// Exactly the window is fine; one byte more is a violation.
	peer.send(Data{GUID: g, Data: make([]byte, window)})
	peer.send(Data{GUID: g, Data: []byte{1}})
	m, err = peer.next()
	if err != nil {
		t.Fatal(err)
	}
	if ack, ok := m.(Ack); !ok || ack.Ok || !ack.GUID.IsZero() || !strings.Contains(ack.Message, "credit") {
		t.Fatalf("got %#v, want a session Ack explaining the credit violation", m)
	}
	waitDone(t, srv, 5*time.Second)
	if !errors.Is(srv.Err(), ErrProtocol) || !errors.Is(srv.Err(), ErrSessionClosed) {
		t.Fatalf("session error %v, want ErrProtocol and ErrSessionClosed", srv.Err())
	}
	if _, err := peer.next(); err == nil {
		t.Fatal("connection still open after the violation")
	}
}

func TestOversizeFrameRefused(t *testing.T) {
	sc, cc := wsPair(t)
	srv, err := NewSession(sc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	big := make([]byte, MaxFrameSize+1)
	big[0] = byte(TypeData)
	if err := cc.WriteMessage(context.Background(), big); err != nil {
		t.Fatal(err)
	}
	waitDone(t, srv, 5*time.Second)
	if !errors.Is(srv.Err(), ErrFrameTooLarge) {
		t.Fatalf("session error %v, want ErrFrameTooLarge", srv.Err())
	}
	// The peer learns why from the WebSocket close status (1009).
	var err2 error
	for err2 == nil {
		_, err2 = cc.ReadMessage(context.Background())
	}
	if websocket.CloseStatus(err2) != websocket.StatusMessageTooBig {
		t.Fatalf("peer read error %v, want close status 1009", err2)
	}
}

// A frame of exactly MaxFrameSize is allowed.
func TestMaxFrameSizeAccepted(t *testing.T) {
	sc, cc := wsPair(t)
	b := AppendData(nil, testGUID, make([]byte, MaxDataSize))
	if len(b) != MaxFrameSize {
		t.Fatalf("largest Data frame is %d bytes, want %d", len(b), MaxFrameSize)
	}
	go cc.WriteMessage(context.Background(), b)
	got, err := sc.ReadMessage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != MaxFrameSize {
		t.Fatalf("read %d bytes", len(got))
	}
}

func TestStreamLimitRefusedWithReason(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{MaxStreams: 2})
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		io.Copy(io.Discard, st)
	})
	ctx := testCtx(t)
	for range 2 {
		st, err := srv.Open(ctx, Initiator{Gatename: "g"})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
	}
	_, err := srv.Open(ctx, Initiator{Gatename: "g"})
	var re *RefusedError
	if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
		t.Fatalf("third Open: %v, want a RefusedError", err)
	}
	if !strings.Contains(re.Reason, "too many streams") {
		t.Fatalf("reason %q", re.Reason)
	}
	// The opener's own limit fails locally.
	local, _ := pair(t, Config{MaxStreams: 1}, Config{})
	pending := make(chan struct{})
	defer func() { <-pending }()
	defer local.Close()
	go func() {
		defer close(pending)
		// Nobody accepts on the other side: this Open stays pending.
		local.Open(ctx, Initiator{Gatename: "g"})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for local.NumStreams() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := local.Open(ctx, Initiator{Gatename: "g"}); !errors.Is(err, ErrTooManyStreams) {
		t.Fatalf("Open over the local limit: %v", err)
	}
}

func TestAcceptorRefuses(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	serve(t, cli, func(st *Stream) {
		if err := st.Ack(false, "destination not allowed"); err != nil {
			t.Error(err)
		}
		if err := st.Ack(true, ""); !errors.Is(err, ErrAlreadyAcked) {
			t.Errorf("second Ack: %v", err)
		}
	})
	_, err := srv.Open(testCtx(t), Initiator{Ip: "10.0.0.1", Port: 22, Gatename: "g"})
	var re *RefusedError
	if !errors.As(err, &re) || re.Reason != "destination not allowed" {
		t.Fatalf("Open: %v", err)
	}
	if n := srv.NumStreams(); n != 0 {
		t.Fatalf("%d streams left after a refusal", n)
	}
}

func TestNotAcked(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	errc := make(chan error, 2)
	serve(t, cli, func(st *Stream) {
		_, err := st.Write([]byte("x"))
		errc <- err
		_, err = st.Read(make([]byte, 1))
		errc <- err
		st.Ack(true, "")
	})
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for range 2 {
		if err := <-errc; !errors.Is(err, ErrNotAcked) {
			t.Fatalf("I/O before Ack: %v", err)
		}
	}
}

func TestOpenCancelled(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	accepted := make(chan *Stream, 1)
	serve(t, cli, func(st *Stream) {
		accepted <- st
		waitClosed(st)
	})
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := srv.Open(ctx, Initiator{Gatename: "g"})
		errc <- err
	}()
	st := <-accepted
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Open: %v", err)
	}
	// The opener's Terminator withdraws the stream: answering it fails,
	// or, acked before the Terminator arrived, its reads end.
	if err := st.Ack(true, ""); !errors.Is(err, ErrStreamReset) {
		if err != nil {
			t.Fatalf("Ack of a withdrawn stream: %v", err)
		}
		if _, err := st.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read on a withdrawn stream: %v", err)
		}
	}
	if n := srv.NumStreams(); n != 0 {
		t.Fatalf("%d streams left on the opener", n)
	}
}

func TestDeadlines(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{StreamWindow: MinWindow})
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		waitClosed(st)
	})
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = st.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past deadline: %v, want a timeout", err)
	}
	// A deadline set while a Read is blocked applies to it.
	st.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	st.SetReadDeadline(time.Now())
	if err := <-errc; !errors.Is(err, errDeadline) {
		t.Fatalf("blocked read after SetReadDeadline: %v", err)
	}

	// The peer never reads: writes block at the window, then time out.
	st.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := st.Write(make([]byte, 4*MinWindow))
	if !errors.Is(err, errDeadline) {
		t.Fatalf("write past the window: %d, %v", n, err)
	}
	if n != MinWindow {
		t.Fatalf("wrote %d bytes before blocking, want the window %d", n, MinWindow)
	}
	st.SetWriteDeadline(time.Time{})
}

// stallConn wraps a Conn and, once stalled, delivers nothing more and
// swallows writes: a peer that vanished without closing anything.
type stallConn struct {
	Conn
	stalled atomic.Bool
	closed  chan struct{}
	once    sync.Once
}

func newStallConn(c Conn) *stallConn { return &stallConn{Conn: c, closed: make(chan struct{})} }

func (c *stallConn) ReadMessage(ctx context.Context) ([]byte, error) {
	b, err := c.Conn.ReadMessage(ctx)
	if c.stalled.Load() {
		<-c.closed
		return nil, net.ErrClosed
	}
	return b, err
}

func (c *stallConn) WriteMessage(ctx context.Context, p []byte) error {
	if c.stalled.Load() {
		return nil
	}
	return c.Conn.WriteMessage(ctx, p)
}

// Close does not close the real connection of a stalled peer, which
// vanished without a FIN; wsPair's cleanup closes it.
func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	if c.stalled.Load() {
		return nil
	}
	return c.Conn.Close()
}

func TestKeepAliveDetectsDeadPeer(t *testing.T) {
	sc, cc := wsPair(t)
	stall := newStallConn(cc)
	cfg := Config{KeepAliveInterval: 50 * time.Millisecond, KeepAliveTimeout: 400 * time.Millisecond}
	srv, cli := sessionsOver(t, sc, stall, cfg, cfg)
	// Healthy: pings flow, an RTT is measured, nobody times out.
	time.Sleep(600 * time.Millisecond)
	if srv.Err() != nil || cli.Err() != nil {
		t.Fatalf("healthy sessions closed: %v / %v", srv.Err(), cli.Err())
	}
	if srv.RTT() <= 0 || cli.RTT() <= 0 {
		t.Fatalf("no RTT measured: %v / %v", srv.RTT(), cli.RTT())
	}
	stall.stalled.Store(true)
	start := time.Now()
	waitDone(t, cli, 3*time.Second)
	waitDone(t, srv, 3*time.Second)
	for _, s := range []*Session{cli, srv} {
		if !errors.Is(s.Err(), ErrKeepAliveTimeout) {
			t.Fatalf("session error %v, want ErrKeepAliveTimeout", s.Err())
		}
	}
	t.Logf("dead peer detected in %v", time.Since(start))
}

func TestCloseWithReason(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	serve(t, cli, echo)
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	srv.CloseWithReason("replaced by a newer session")
	waitDone(t, cli, 5*time.Second)
	if !errors.Is(cli.Err(), ErrClosedByPeer) || !strings.Contains(cli.Err().Error(), "replaced by a newer session") {
		t.Fatalf("peer's session error: %v", cli.Err())
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("write on a closed session: %v", err)
	}
	if _, err := srv.Open(testCtx(t), Initiator{Gatename: "g"}); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Open on a closed session: %v", err)
	}
	if _, err := srv.Accept(testCtx(t)); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Accept on a closed session: %v", err)
	}
}

// When the transport dies, blocked stream calls return the session error.
func TestTransportLossFailsStreams(t *testing.T) {
	sc, cc := wsPair(t)
	srv, cli := sessionsOver(t, sc, cc, Config{}, Config{})
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		waitClosed(st)
	})
	st, err := srv.Open(testCtx(t), Initiator{Gatename: "g"})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		errc <- err
	}()
	cc.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrSessionClosed) {
			t.Fatalf("read: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still blocked after the transport closed")
	}
}

func TestProtocolViolations(t *testing.T) {
	tests := []struct {
		name string
		send func(p rawPeer)
		want string
	}{
		{"handshake mid-session", func(p rawPeer) {
			p.send(Handshake{Name: "a", Key: "b", Version: 1})
		}, "unexpected Handshake"},
		{"garbage", func(p rawPeer) {
			p.conn.WriteMessage(context.Background(), []byte{0x42, 1, 2})
		}, "unknown message type"},
		{"too much early data", func(p rawPeer) {
			g := NewGUID()
			p.send(Initiator{GUID: g, Gatename: "g"})
			p.send(Data{GUID: g, Data: make([]byte, MaxEarlyData)})
			p.send(Data{GUID: g, Data: []byte("1")})
		}, "early data"},
		{"window overflow", func(p rawPeer) {
			g := NewGUID()
			p.send(Initiator{GUID: g, Gatename: "g"})
			for range 2 {
				p.send(Window{GUID: g, Credit: MaxWindow})
			}
		}, "credit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, cc := wsPair(t)
			srv, err := NewSession(sc, Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			// Accept without answering, so that data is early data.
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if _, err := srv.Accept(context.Background()); err != nil {
						return
					}
				}
			}()
			defer wg.Wait()
			defer srv.Close()
			tt.send(rawPeer{t, cc})
			waitDone(t, srv, 5*time.Second)
			cc.Close() // the session drains until the peer hangs up
			if !errors.Is(srv.Err(), ErrProtocol) || !strings.Contains(srv.Err().Error(), tt.want) {
				t.Fatalf("session error %v, want a protocol violation about %q", srv.Err(), tt.want)
			}
		})
	}
}

func TestVerifyConfig(t *testing.T) {
	if err := VerifyConfig(Config{}); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	if err := VerifyConfig(DefaultConfig()); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, c := range []Config{
		{StreamWindow: 1024},
		{StreamWindow: MaxWindow + 1},
		{MaxStreams: -1},
		{AcceptBacklog: -1},
		{KeepAliveInterval: time.Second, KeepAliveTimeout: time.Second},
		{WriteTimeout: -time.Second},
	} {
		if err := VerifyConfig(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("VerifyConfig(%+v) = %v", c, err)
		}
	}
	if _, err := NewSession(nil, Config{MaxStreams: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewSession accepted an invalid config: %v", err)
	}
}

func TestRecvBuffer(t *testing.T) {
	var b recvBuffer
	var want []byte
	// One-byte writes pack into chunks rather than one allocation each.
	for i := range chunkSize + 10 {
		b.write([]byte{byte(i)})
		want = append(want, byte(i))
	}
	if len(b.segs) != 2 {
		t.Fatalf("%d chunks for %d bytes", len(b.segs), b.len())
	}
	// A kept frame sits between chunks without a copy; small Data after it
	// starts a new chunk.
	fp := framePool.Get().(*[]byte)
	frame := append((*fp)[:0], randomBytes(keepFrameMin)...)
	b.keep(fp, frame)
	want = append(want, frame...)
	b.write([]byte("after"))
	want = append(want, "after"...)
	if len(b.segs) != 4 {
		t.Fatalf("%d segments after a kept frame and a write", len(b.segs))
	}
	big := randomBytes(3*chunkSize + 5)
	b.write(big)
	want = append(want, big...)
	var got []byte
	p := make([]byte, 1000)
	for b.len() > 0 {
		n := b.read(p)
		got = append(got, p[:n]...)
	}
	mustEqual(t, got, want)
	if len(b.segs) != 0 {
		t.Fatalf("drained buffer keeps %d segments", len(b.segs))
	}
	b.write([]byte("x"))
	b.free()
	if b.len() != 0 || b.segs != nil {
		t.Fatal("free left data")
	}
}

// Closing a stream while another goroutine writes to it (as a relay does
// when one direction ends) must never put Data behind the Terminator, which
// the peer would take as a protocol violation.
func TestCloseDuringWrite(t *testing.T) {
	srv, cli := pair(t, Config{}, Config{})
	serve(t, cli, func(st *Stream) {
		st.Ack(true, "")
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 1500)
			for {
				if _, err := st.Write(p); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Duration(st.Initiator().Port%5) * time.Millisecond)
		st.Close()
		wg.Wait()
	})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := srv.Open(ctx, Initiator{Gatename: "g", Port: uint16(i)})
			if err != nil {
				t.Error(err)
				return
			}
			defer st.Close()
			io.Copy(io.Discard, st)
		}()
	}
	wg.Wait()
	if srv.Err() != nil || cli.Err() != nil {
		t.Fatalf("session closed: %v / %v", srv.Err(), cli.Err())
	}
}

// A ServeSession hands every stream the peer opens to its start function,
// on the session's reader; Accept gets none of them.
func TestServeSession(t *testing.T) {
	sc, cc := wsPair(t)
	cloud, err := NewSession(sc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cloud.Close() })
	var wg sync.WaitGroup
	agent, err := ServeSession(cc, Config{}, func(st *Stream) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			echo(st)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agent.Close()
		wg.Wait()
	})
	for i := range 20 {
		st, err := cloud.Open(testCtx(t), Initiator{Gatename: "g"})
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte(fmt.Sprintf("hello %d", i))
		got, err := roundTrip(st, msg)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, got, msg)
		st.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if st, err := agent.Accept(ctx); err == nil {
		t.Fatalf("Accept returned stream %v of a ServeSession", st.GUID())
	}
	if _, err := ServeSession(cc, Config{}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("ServeSession without a start function: %v", err)
	}
}
