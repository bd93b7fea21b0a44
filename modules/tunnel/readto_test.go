package tunnel

import (
	"bytes"
	"testing"
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
			serve(t, cli, func(st *Stream) {
				st.Ack(true, "")
				p := want
				for i := 0; len(p) > 0; i++ {
					n := min(len(p), []int{MaxDataSize, 100, keepFrameMin, 3 * MaxDataSize, 1}[i%5])
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
			defer st.Close()
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
