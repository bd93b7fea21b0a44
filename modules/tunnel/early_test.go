package tunnel

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

// TestOpenEarly: to a peer of VersionEarlyData, OpenEarly's bytes arrive
// before the acceptor answers, and come first on the stream once it does;
// the credit they took is accounted for, so a bulk write behind them stays
// within the window (the receiver would end the session otherwise). To an
// older peer they are only sent after the Ack, which such a peer requires.
func TestOpenEarly(t *testing.T) {
	for _, tc := range []struct {
		name      string
		peer      uint16
		wantEarly bool
	}{
		{"early", VersionEarlyData, true},
		{"older peer", VersionEarlyData - 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cloud, agent := pair(t, Config{}, Config{StreamWindow: MinWindow, MaxStreamWindow: MinWindow})
			cloud.SetPeerVersion(tc.peer)
			hello := randomBytes(1500)
			bulk := randomBytes(1 << 20)
			got := make(chan []byte, 1)
			serve(t, agent, func(st *Stream) {
				defer close(got)
				if tc.wantEarly {
					testtools.Eventually(t, 5*time.Second, "early data before the ack", func() bool {
						st.mu.Lock()
						defer st.mu.Unlock()
						return st.buf.len() == len(hello)
					})
				} else {
					time.Sleep(100 * time.Millisecond)
					st.mu.Lock()
					n := st.buf.len()
					st.mu.Unlock()
					if n != 0 {
						t.Errorf("%d bytes arrived before the ack from a peer that must not send early data", n)
					}
				}
				if err := st.Ack(true, ""); err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(st)
				if err != nil {
					t.Error(err)
				}
				got <- b
			})
			st, err := cloud.OpenEarly(testCtx(t), Initiator{Gatename: "home"}, hello)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(bulk); err != nil {
				t.Fatal(err)
			}
			st.CloseWrite()
			if b := <-got; !bytes.Equal(b, append(hello, bulk...)) {
				t.Fatalf("the acceptor read %d bytes, want %d in order", len(b), len(hello)+len(bulk))
			}
			if cloud.Err() != nil || agent.Err() != nil {
				t.Fatalf("sessions ended: %v, %v", cloud.Err(), agent.Err())
			}
		})
	}
}

// TestRefusedEarlyData: a refusal drops the early data and reaches OpenEarly
// as it does Open.
func TestRefusedEarlyData(t *testing.T) {
	cloud, agent := pair(t, Config{}, Config{})
	cloud.SetPeerVersion(VersionEarlyData)
	serve(t, agent, func(st *Stream) { st.Ack(false, "not here") })
	_, err := cloud.OpenEarly(testCtx(t), Initiator{Gatename: "home"}, []byte("hello"))
	if re, ok := err.(*RefusedError); !ok || re.Reason != "not here" {
		t.Fatalf("OpenEarly: %v", err)
	}
	if n := agent.NumStreams(); n != 0 {
		t.Fatalf("%d streams left on the acceptor", n)
	}
}

// countingConn counts the writes to a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// Over the raw transport, an idle session sends the Initiator and the early
// data of OpenEarly in one network write, which the peer takes as two
// frames: the stream, its first bytes buffered before the Ack.
func TestOpenEarlyOneWrite(t *testing.T) {
	a, b := net.Pipe()
	ca := &countingConn{Conn: a}
	cloud, agent := sessionsOver(t, RawConn(ca, nil, nil), RawConn(b, nil, nil), Config{}, Config{})
	cloud.SetPeerVersion(VersionEarlyData)
	hello := randomBytes(1500)
	accepted := make(chan *Stream, 1)
	serve(t, agent, func(st *Stream) {
		testtools.Eventually(t, 5*time.Second, "early data before the ack", func() bool {
			st.mu.Lock()
			defer st.mu.Unlock()
			return st.buf.len() == len(hello)
		})
		accepted <- st
		if err := st.Ack(true, ""); err != nil {
			t.Error(err)
		}
		waitClosed(st)
	})
	// The first keepalive pings and their pongs.
	testtools.Eventually(t, 5*time.Second, "keepalive exchange", func() bool {
		return cloud.RTT() > 0 && agent.RTT() > 0
	})
	before := ca.writes.Load()
	st, err := cloud.OpenEarly(testCtx(t), Initiator{Gatename: "home"}, hello)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	<-accepted
	if n := ca.writes.Load() - before; n != 1 {
		t.Errorf("the Initiator and the early data took %d writes, want 1", n)
	}
}

// Early takes the early data off an unanswered stream; what the stream
// carries after it is read in order behind it, and the credit the early
// bytes took is granted back (a transfer of many windows completes).
func TestEarlyTakesEarlyData(t *testing.T) {
	cloud, agent := pair(t, Config{}, Config{StreamWindow: MinWindow, MaxStreamWindow: MinWindow})
	cloud.SetPeerVersion(VersionEarlyData)
	hello := randomBytes(1500)
	bulk := randomBytes(8 * MinWindow)
	type result struct{ early, rest []byte }
	got := make(chan result, 1)
	serve(t, agent, func(st *Stream) {
		testtools.Eventually(t, 5*time.Second, "early data before the ack", func() bool {
			st.mu.Lock()
			defer st.mu.Unlock()
			return st.buf.len() == len(hello)
		})
		early := st.Early()
		if again := st.Early(); again != nil {
			t.Errorf("a second Early returned %d bytes", len(again))
		}
		if err := st.Ack(true, ""); err != nil {
			t.Error(err)
			return
		}
		if e := st.Early(); e != nil {
			t.Errorf("Early after the Ack returned %d bytes", len(e))
		}
		rest, err := io.ReadAll(st)
		if err != nil {
			t.Error(err)
		}
		got <- result{early, rest}
	})
	st, err := cloud.OpenEarly(testCtx(t), Initiator{Gatename: "home"}, hello)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(bulk); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	r := <-got
	mustEqual(t, r.early, hello)
	mustEqual(t, r.rest, bulk)
}
