package tunnel

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// copyChunk is what io.Copy moves per call, as a relay between a TCP
// connection and a stream does.
const copyChunk = 32 << 10

// BenchmarkStreamThroughput moves data over one stream of a session on a
// loopback WebSocket or raw transport (RawUpgrade), then the same amount
// over a plain loopback TCP connection, and reports both rates and their
// ratio. The agent is the WebSocket client, so agent-to-cloud frames are
// masked on the WebSocket.
func BenchmarkStreamThroughput(b *testing.B) {
	for _, transport := range []string{"websocket", "raw"} {
		for _, dir := range []string{"cloud-to-agent", "agent-to-cloud"} {
			b.Run(transport+"/"+dir, func(b *testing.B) { benchStreamThroughput(b, transport, dir) })
		}
	}
}

func benchStreamThroughput(b *testing.B, transport, dir string) {
	sc, cc := wsPair(b)
	if transport == "raw" {
		sc, cc = rawPair(b)
	}
	cloud, agent := sessionsOver(b, sc, cc, Config{}, Config{})
	from, to := cloud, agent
	if dir == "agent-to-cloud" {
		from, to = agent, cloud
	}
	received := make(chan int64, 1)
	serve(b, to, func(st *Stream) {
		st.Ack(true, "")
		n, _ := io.Copy(io.Discard, st)
		received <- n
	})
	st, err := from.Open(context.Background(), Initiator{Gatename: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	total := int64(b.N) * (1 << 20)
	buf := randomBytes(copyChunk)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	start := time.Now()
	for sent := int64(0); sent < total; sent += copyChunk {
		if _, err := st.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	st.CloseWrite()
	if n := <-received; n != total {
		b.Fatalf("received %d bytes, want %d", n, total)
	}
	tunnel := time.Since(start)
	b.StopTimer()

	tcp := rawTCPCopy(b, total, buf)
	mbps := func(d time.Duration) float64 { return float64(total) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(tcp), "tcp-MB/s")
	b.ReportMetric(mbps(tunnel)/mbps(tcp), "tunnel/tcp")
}

// rawTCPCopy times total bytes over a plain loopback TCP connection.
func rawTCPCopy(b *testing.B, total int64, buf []byte) time.Duration {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			received <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		received <- n
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for sent := int64(0); sent < total; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	n := <-received
	d := time.Since(start)
	c.Close()
	if n != total {
		b.Fatalf("tcp received %d bytes, want %d", n, total)
	}
	return d
}

// BenchmarkIdleStreamMemory reports the heap held by an open, idle stream:
// both ends of it (the opener's and the acceptor's Stream), since both
// sessions live in this process.
func BenchmarkIdleStreamMemory(b *testing.B) {
	const n = 1000
	srv, cli := pair(b, Config{}, Config{AcceptBacklog: n})
	accepted := make(chan *Stream, n)
	serve(b, cli, func(st *Stream) {
		st.Ack(true, "")
		accepted <- st
		waitClosed(st)
	})
	var perStream float64
	for range b.N {
		streams := make([]*Stream, 0, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range n {
			st, err := srv.Open(context.Background(), Initiator{Gatename: "idle", ClientAddr: "198.51.100.20:40000"})
			if err != nil {
				b.Fatal(err)
			}
			streams = append(streams, st)
		}
		peers := make([]*Stream, 0, n)
		for range n {
			peers = append(peers, <-accepted)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perStream = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		for _, st := range streams {
			st.Close()
		}
		for _, st := range peers {
			st.Close()
		}
	}
	b.ReportMetric(perStream, "heap-B/stream")
}
