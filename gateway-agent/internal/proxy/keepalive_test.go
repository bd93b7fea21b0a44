package proxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// The relay dials the upstream without keep-alive, to keep its system
// calls off the way to the early data, and turns it on after the Ack: a
// relayed connection ends up with the keep-alive timer (15 s) the default
// dial would have set. Linux shows the timer in /proc/net/tcp.
func TestPassthroughUpstreamKeepAlive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads the socket's timer from /proc/net/tcp")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- c
	}()
	s, err := New(Config{Passthrough: true, UpstreamAddr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	cloud := sessions(t, s.HandleStream)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cloud.Open(ctx, tunnel.Initiator{Gatename: "home"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var up net.Conn
	select {
	case up = <-accepted:
	case <-ctx.Done():
		t.Fatal("the upstream got no connection")
	}
	defer up.Close()
	// The agent's end of the upstream connection, as /proc/net/tcp
	// writes it: local and remote address in hex, little-endian IPv4.
	hexAddr := func(a net.Addr) string {
		ap := a.(*net.TCPAddr).AddrPort()
		ip := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port())
	}
	local, remote := hexAddr(up.RemoteAddr()), hexAddr(up.LocalAddr())
	var timer string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Skipf("no /proc/net/tcp: %v", err)
		}
		timer = ""
		for _, line := range strings.Split(string(b), "\n") {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when ...
			f := strings.Fields(line)
			if len(f) > 5 && f[1] == local && f[2] == remote {
				timer = f[5]
			}
		}
		// 02: a timer other than retransmission runs; keep-alive's is
		// 15 s (1500 ticks of 10 ms), a delayed ACK's far shorter.
		if tr, when, ok := strings.Cut(timer, ":"); ok && tr == "02" {
			if n, err := strconv.ParseUint(when, 16, 64); err == nil && n > 500 {
				return
			}
		}
	}
	t.Fatalf("the agent's upstream socket %s -> %s has timer %q, want the keep-alive timer (02:, about 15 s)", local, remote, timer)
}
