package tunnel

import (
	"errors"
	"testing"
	"time"
)

// TestDeliveryToWaitingReaders: data that finds Reads waiting goes into
// their buffers directly; with several Reads waiting at once on one
// stream, and a Read that gave up at its deadline before the data came,
// every byte is still read exactly once.
func TestDeliveryToWaitingReaders(t *testing.T) {
	cloud, agent := pair(t, Config{}, Config{})
	accepted := make(chan *Stream, 1)
	serve(t, agent, func(st *Stream) {
		st.Ack(true, "")
		accepted <- st
		waitClosed(st)
	})
	st, err := cloud.Open(testCtx(t), Initiator{Gatename: "home"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rs := <-accepted

	// A Read that times out leaves nothing registered behind it.
	rs.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := rs.Read(make([]byte, 10)); !errors.Is(err, errDeadline) {
		t.Fatalf("read before any data: %v", err)
	}
	rs.SetReadDeadline(time.Time{})

	payload := randomBytes(3 << 20)
	var want int
	for _, b := range payload {
		want += int(b)
	}
	type result struct{ n, sum int }
	results := make(chan result, 3)
	for _, size := range []int{1, 700, 64 << 10} {
		go func() {
			buf := make([]byte, size)
			var r result
			for {
				n, err := rs.Read(buf)
				r.n += n
				for _, b := range buf[:n] {
					r.sum += int(b)
				}
				if err != nil {
					results <- r
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let the readers wait first
	go func() {
		for p := payload; len(p) > 0; {
			n := min(len(p), 5000)
			st.Write(p[:n])
			p = p[n:]
		}
		st.CloseWrite()
	}()
	var got result
	for range 3 {
		select {
		case r := <-results:
			got.n += r.n
			got.sum += r.sum
		case <-time.After(30 * time.Second):
			t.Fatal("a reader never finished")
		}
	}
	if got.n != len(payload) || got.sum != want {
		t.Fatalf("read %d bytes (sum %d), want %d (sum %d)", got.n, got.sum, len(payload), want)
	}
}
