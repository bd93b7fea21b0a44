package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// rawPair connects two Conns over the raw transport through an httptest
// server on loopback, upgraded as an agent and the hub do: server is
// AcceptTransport's side, client the dialled one.
func rawPair(t testing.TB) (server, client Conn) {
	t.Helper()
	ch := make(chan Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, transport, err := AcceptTransport(w, r)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		if transport != RawUpgrade {
			t.Errorf("transport %q", transport)
		}
		ch <- c
	}))
	t.Cleanup(hs.Close)
	req, err := http.NewRequest(http.MethodGet, hs.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket, "+RawUpgrade)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !HeaderHasToken(resp.Header, "Upgrade", RawUpgrade) {
		t.Fatalf("upgrade answered %s %v", resp.Status, resp.Header)
	}
	client = RawConn(resp.Body.(io.ReadWriteCloser), nil, nil)
	server = <-ch
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return server, client
}

// TestRawSessions runs streams both ways over the raw transport: sizes
// around the frame boundaries, many streams at once, each echoed whole.
func TestRawSessions(t *testing.T) {
	sc, cc := rawPair(t)
	cloud, agent := sessionsOver(t, sc, cc, Config{}, Config{})
	serve(t, agent, echo)
	serve(t, cloud, echo)
	var wg sync.WaitGroup
	for i, n := range []int{1, 255, 256, MaxDataSize - 1, MaxDataSize, MaxDataSize + 1, 1 << 20, 3<<20 + 7} {
		for _, from := range []*Session{cloud, agent} {
			wg.Go(func() {
				st, err := from.Open(testCtx(t), Initiator{Gatename: "home"})
				if err != nil {
					t.Error(err)
					return
				}
				defer st.Close()
				p := randomBytes(n)
				got, err := roundTrip(st, p)
				if err != nil {
					t.Errorf("stream %d (%d bytes): %v", i, n, err)
				}
				if !bytes.Equal(got, p) {
					t.Errorf("stream %d: %d bytes came back for %d", i, len(got), n)
				}
			})
		}
	}
	wg.Wait()
}

// TestRawFrameLimits: a length prefix above MaxFrameSize, or of zero, ends
// the reading side with a clear error, before any allocation for it.
func TestRawFrameLimits(t *testing.T) {
	for _, tc := range []struct {
		n    uint32
		want error
	}{
		{MaxFrameSize + 1, ErrFrameTooLarge},
		{1 << 31, ErrFrameTooLarge},
		{0, ErrProtocol},
	} {
		a, b := net.Pipe()
		c := RawConn(a, nil, nil)
		go func() {
			_, _ = b.Write(binary.BigEndian.AppendUint32(nil, tc.n))
		}()
		_, err := c.ReadMessage(context.Background())
		if !errors.Is(err, tc.want) {
			t.Errorf("length %d: %v, want %v", tc.n, err, tc.want)
		}
		c.Close()
		b.Close()
	}
	// A frame at the limit passes; the writer refuses one beyond it.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w, r := RawConn(a, nil, nil), RawConn(b, nil, nil)
	frame := bytes.Repeat([]byte{7}, MaxFrameSize)
	errc := make(chan error, 1)
	go func() { errc <- w.WriteMessage(context.Background(), frame) }()
	got, err := r.ReadMessage(context.Background())
	if err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("frame of MaxFrameSize: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessage(context.Background(), append(frame, 1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("writing a frame above the limit: %v", err)
	}
}

// TestRawTruncatedFrame: the connection ending inside a frame is an error,
// not a short frame.
func TestRawTruncatedFrame(t *testing.T) {
	a, b := net.Pipe()
	c := RawConn(a, nil, nil)
	defer c.Close()
	go func() {
		_, _ = b.Write(append(binary.BigEndian.AppendUint32(nil, 10), 1, 2, 3))
		b.Close()
	}()
	if _, err := c.ReadMessage(context.Background()); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame read as %v", err)
	}
}

// TestRawContextClosesConn: as with the WebSocket, a context that ends
// during a read (the handshake's timeout) closes the connection and the
// read returns the context's error.
func TestRawContextClosesConn(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := RawConn(a, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.ReadMessage(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read: %v", err)
	}
	if _, err := b.Write([]byte{1}); err == nil {
		t.Fatal("the connection stayed open after the context ended")
	}
}

// TestOffersRaw checks the request test of the upgrade: token lists in one
// or several header lines, any case; not without Connection: upgrade.
func TestOffersRaw(t *testing.T) {
	for _, tc := range []struct {
		connection string
		upgrade    []string
		want       bool
	}{
		{"Upgrade", []string{"websocket", RawUpgrade}, true},
		{"keep-alive, upgrade", []string{"websocket, GATEHOUSE-TUNNEL/2"}, true},
		{"Upgrade", []string{"websocket"}, false},
		{"Upgrade", []string{"gatehouse-tunnel/3"}, false},
		{"keep-alive", []string{RawUpgrade}, false},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v1/tunnel", nil)
		r.Header.Set("Connection", tc.connection)
		for _, u := range tc.upgrade {
			r.Header.Add("Upgrade", u)
		}
		if got := OffersRaw(r); got != tc.want {
			t.Errorf("Connection %q Upgrade %q: %v, want %v", tc.connection, tc.upgrade, got, tc.want)
		}
	}
}

// rwBuffer is an in-memory io.ReadWriteCloser: reads from r, writes to w.
type rwBuffer struct {
	r io.Reader
	w bytes.Buffer
}

func (b *rwBuffer) Read(p []byte) (int, error)  { return b.r.Read(p) }
func (b *rwBuffer) Write(p []byte) (int, error) { return b.w.Write(p) }
func (b *rwBuffer) Close() error                { return nil }

// FuzzRawFrames feeds arbitrary bytes to the raw transport's reader: it
// must never panic nor return a frame outside 1..MaxFrameSize, and the
// frames it returns, written back, must give the bytes it consumed.
func FuzzRawFrames(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 6, 0x81, 0xa5})
	f.Add(binary.BigEndian.AppendUint32(nil, MaxFrameSize+1))
	f.Add([]byte{0, 0, 0, 0})
	f.Add(append(binary.BigEndian.AppendUint32(nil, 2), 1, 2, 0, 0, 0, 1))
	f.Fuzz(func(t *testing.T, in []byte) {
		src := &rwBuffer{r: bytes.NewReader(in)}
		c := RawConn(src, nil, nil)
		out := &rwBuffer{}
		w := RawConn(out, nil, nil)
		for {
			b, err := c.ReadMessage(context.Background())
			if err != nil {
				break
			}
			if len(b) == 0 || len(b) > MaxFrameSize {
				t.Fatalf("frame of %d bytes", len(b))
			}
			if err := w.WriteMessage(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.HasPrefix(in, out.w.Bytes()) {
			t.Fatal("the frames read do not re-encode to the input")
		}
	})
}
