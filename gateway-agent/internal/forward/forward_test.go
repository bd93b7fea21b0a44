package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/client"
)

// memConn is one end of an in-memory tunnel.Conn pair.
type memConn struct {
	in, out chan []byte
	done    chan struct{}
	once    *sync.Once
}

func memPair() (a, b *memConn) {
	ab, ba, done, once := make(chan []byte, 64), make(chan []byte, 64), make(chan struct{}), &sync.Once{}
	return &memConn{in: ba, out: ab, done: done, once: once}, &memConn{in: ab, out: ba, done: done, once: once}
}

func (c *memConn) ReadMessage(ctx context.Context) ([]byte, error) {
	select {
	case b := <-c.in:
		return b, nil
	case <-c.done:
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *memConn) WriteMessage(ctx context.Context, p []byte) error {
	select {
	case c.out <- bytes.Clone(p):
		return nil
	case <-c.done:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *memConn) Close() error { c.once.Do(func() { close(c.done) }); return nil }

// sessions returns a connected pair: the source agent's and the target's
// (standing in for the cloud's leg toward it).
func sessions(t *testing.T) (source, target *tunnel.Session) {
	a, b := memPair()
	s, err := tunnel.NewSession(a, tunnel.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := tunnel.NewSession(b, tunnel.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(); _ = tg.Close(); <-s.Done(); <-tg.Done() })
	return s, tg
}

// serveTarget accepts the target session's streams with tg until the test
// ends.
func serveTarget(t *testing.T, sess *tunnel.Session, tg *Target) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 1000 {
			st, err := sess.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer st.Close()
				tg.Handle(ctx, st)
			})
		}
	})
	t.Cleanup(func() { cancel(); _ = sess.Close(); wg.Wait() })
}

// halfCloseServer reads everything until EOF, then answers how much it got
// and closes: it only works if the client's half-close arrives.
func halfCloseServer(t *testing.T) (addr string, clients chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clients = make(chan string, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 100 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "got %d bytes", n)
			})
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String(), clients
}

// roundTrip sends payload, half-closes, and reads the answer to EOF.
func roundTrip(t *testing.T, addr string, payload []byte) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func allowAll(t *testing.T, from ...string) AllowList {
	l, err := AllowList{{To: []string{"127.0.0.0/8"}, Ports: []PortRange{{1, 65535}}, From: from}}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func portOf(t *testing.T, addr string) uint16 {
	_, p, _ := net.SplitHostPort(addr)
	var n uint16
	if _, err := fmt.Sscan(p, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A local connection goes through the tunnel to an allowed destination and
// back, with the half-close passed along both legs.
func TestForwardThroughTunnel(t *testing.T) {
	src, dst := sessions(t)
	var logs logBuffer
	tg := &Target{Allow: allowAll(t), Logger: logs.logger()}
	serveTarget(t, dst, tg)
	dest, _ := halfCloseServer(t)

	m := NewManager(src, Settings{Logger: logs.logger()})
	defer m.Close()
	info, err := m.Add(Spec{Local: "127.0.0.1:0", Gateway: "GW1", IP: "127.0.0.1", Remote: portOf(t, dest)}, "api")
	if err != nil {
		t.Fatal(err)
	}
	if info.Gateway != "gw1" || strings.HasSuffix(info.Local, ":0") || info.Origin != "api" {
		t.Fatalf("info %+v", info)
	}
	payload := bytes.Repeat([]byte("x"), 3<<20) // several windows' worth
	for i := range 3 {
		got, err := roundTrip(t, info.Local, payload)
		if err != nil || got != fmt.Sprintf("got %d bytes", len(payload)) {
			t.Fatalf("round trip %d: %q %v", i, got, err)
		}
	}
	l := m.List()
	if len(l) != 1 || l[0].Opened != 3 || l[0].Refused != 0 {
		t.Fatalf("list %+v", l)
	}
	if tg.Accepted.Load() != 3 {
		t.Fatalf("target accepted %d", tg.Accepted.Load())
	}
	if !strings.Contains(logs.String(), "client=127.0.0.1:") {
		t.Fatalf("the target does not log the original client:\n%s", logs.String())
	}
}

// The target refuses what its allow-list does not name, and what it cannot
// reach, with the reason in the Ack.
func TestTargetRefusals(t *testing.T) {
	src, dst := sessions(t)
	serveTarget(t, dst, &Target{Allow: allowAll(t, "gw2"), DialTimeout: 2 * time.Second})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := portOf(t, closed.Addr().String())
	closed.Close()
	open, _ := halfCloseServer(t)

	for _, tc := range []struct {
		name string
		init tunnel.Initiator
		want string
	}{
		{"outside the allow-list", tunnel.Initiator{Gatename: "gw2", Ip: "10.1.2.3", Port: 22}, ReasonNotAllowed},
		{"another source gateway", tunnel.Initiator{Gatename: "gw3", Ip: "127.0.0.1", Port: portOf(t, open)}, ReasonNotAllowed},
		{"nothing listens", tunnel.Initiator{Gatename: "gw2", Ip: "127.0.0.1", Port: closedPort}, ReasonDialFailed + ": connection refused"},
		{"no address", tunnel.Initiator{Gatename: "gw2", Port: 22}, ReasonNoAddress},
		{"unspecified address", tunnel.Initiator{Gatename: "gw2", Ip: "0.0.0.0", Port: portOf(t, open)}, ReasonNotAllowed},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := src.Open(ctx, tc.init)
		cancel()
		var refused *tunnel.RefusedError
		if !errors.As(err, &refused) || refused.Reason != tc.want {
			if st != nil {
				st.Close()
			}
			t.Errorf("%s: %v, want refusal %q", tc.name, err, tc.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := src.Open(ctx, tunnel.Initiator{Gatename: "gw2", Ip: "127.0.0.1", Port: portOf(t, open)})
	if err != nil {
		t.Fatalf("allowed: %v", err)
	}
	st.Close()
}

// The attack of issue 14 end to end: with 0.0.0.0 in the allow-list, a
// remote gateway asks for ::ffff:0.0.0.0, which the kernel dials as the
// target host's own loopback. It must be refused before any dial.
func TestTargetRefusesMappedUnspecified(t *testing.T) {
	src, dst := sessions(t)
	allow, err := AllowList{{To: []string{"0.0.0.0"}, Ports: []PortRange{{1, 65535}}}}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	serveTarget(t, dst, &Target{Allow: allow, DialTimeout: 2 * time.Second,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}})
	open, _ := halfCloseServer(t) // a loopback service of the target host
	for _, ip := range []string{"::ffff:0.0.0.0", "0.0.0.0"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := src.Open(ctx, tunnel.Initiator{Gatename: "gw2", Ip: ip, Port: portOf(t, open)})
		cancel()
		var refused *tunnel.RefusedError
		if !errors.As(err, &refused) || refused.Reason != ReasonNotAllowed {
			if st != nil {
				st.Close()
			}
			t.Errorf("%s: %v, want refusal %q", ip, err, ReasonNotAllowed)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials made for refused destinations", n)
	}
}

// From a cloud that fills Source (protocol version 2), the target reads the
// source gateway there: Gatename is the target itself, even when it
// happens to be a name the allow-list admits as a source.
func TestTargetReadsSource(t *testing.T) {
	src, dst := sessions(t)
	src.SetPeerVersion(tunnel.VersionSource)
	serveTarget(t, dst, &Target{Allow: allowAll(t, "gw2"), DialTimeout: 2 * time.Second})
	open, _ := halfCloseServer(t)
	for _, tc := range []struct {
		name    string
		init    tunnel.Initiator
		allowed bool
	}{
		{"allowed source", tunnel.Initiator{Gatename: "gw1", Source: "gw2", Ip: "127.0.0.1", Port: portOf(t, open)}, true},
		{"other source, target named like an allowed one", tunnel.Initiator{Gatename: "gw2", Source: "gw3", Ip: "127.0.0.1", Port: portOf(t, open)}, false},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := src.Open(ctx, tc.init)
		cancel()
		if st != nil {
			st.Close()
		}
		var refused *tunnel.RefusedError
		switch {
		case tc.allowed && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.allowed && (!errors.As(err, &refused) || refused.Reason != ReasonNotAllowed):
			t.Errorf("%s: %v, want refusal %q", tc.name, err, ReasonNotAllowed)
		}
	}
}

// fakeOpener answers Open with its function.
type fakeOpener struct {
	calls atomic.Int32
	open  func(n int32, init tunnel.Initiator) (*tunnel.Stream, error)
}

func (f *fakeOpener) Open(ctx context.Context, init tunnel.Initiator) (*tunnel.Stream, error) {
	return f.open(f.calls.Add(1), init)
}

// A refusal closes the local connection and is logged with its reason.
func TestRefusalClosesTheLocalConnection(t *testing.T) {
	var logs logBuffer
	op := &fakeOpener{open: func(int32, tunnel.Initiator) (*tunnel.Stream, error) {
		return nil, &tunnel.RefusedError{Reason: "denied by the cloud's forwarding rules"}
	}}
	m := NewManager(op, Settings{TunnelWait: 5 * time.Second, Logger: logs.logger()})
	defer m.Close()
	info, err := m.Add(Spec{Local: "127.0.0.1:0", Gateway: "gw1", IP: "10.0.0.1", Remote: 22}, "config")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, err := net.DialTimeout("tcp", info.Local, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if len(got) != 0 || (err != nil && !isReset(err)) {
		t.Fatalf("refused connection read %q %v", got, err)
	}
	if time.Since(start) > 3*time.Second || op.calls.Load() != 1 {
		t.Fatalf("a refusal was retried (%d calls, %s)", op.calls.Load(), time.Since(start))
	}
	if l := m.List(); l[0].Refused != 1 || l[0].LastError != "denied by the cloud's forwarding rules" {
		t.Fatalf("list %+v", l)
	}
	if !strings.Contains(logs.String(), `reason="denied by the cloud's forwarding rules"`) {
		t.Fatalf("log:\n%s", logs.String())
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "broken pipe"))
}

// A connection accepted while the tunnel is down waits for it up to
// TunnelWait; with no wait it is closed at once.
func TestTunnelDownWaitsThenCloses(t *testing.T) {
	src, dst := sessions(t)
	serveTarget(t, dst, &Target{Allow: allowAll(t)})
	dest, _ := halfCloseServer(t)
	op := &fakeOpener{open: func(n int32, init tunnel.Initiator) (*tunnel.Stream, error) {
		if n <= 3 {
			return nil, client.ErrNotConnected
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return src.Open(ctx, init)
	}}
	var logs logBuffer
	m := NewManager(op, Settings{TunnelWait: 5 * time.Second, Logger: logs.logger()})
	defer m.Close()
	info, err := m.Add(Spec{Local: "127.0.0.1:0", Gateway: "gw1", IP: "127.0.0.1", Remote: portOf(t, dest)}, "config")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(t, info.Local, []byte("abc")); got != "got 3 bytes" {
		t.Fatalf("after waiting for the tunnel: %q %v", got, err)
	}
	if !strings.Contains(logs.String(), "tunnel down: the connection waits for it") {
		t.Fatalf("log:\n%s", logs.String())
	}

	down := &fakeOpener{open: func(int32, tunnel.Initiator) (*tunnel.Stream, error) { return nil, client.ErrNotConnected }}
	m0 := NewManager(down, Settings{TunnelWait: 0, Logger: logs.logger()})
	defer m0.Close()
	info0, err := m0.Add(Spec{Local: "127.0.0.1:0", Gateway: "gw1", IP: "127.0.0.1", Remote: 22}, "config")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got, _ := roundTrip(t, info0.Local, []byte("abc")); got != "" || time.Since(start) > 2*time.Second {
		t.Fatalf("tunnel down, no wait: %q after %s", got, time.Since(start))
	}
	if l := m0.List(); l[0].LastError != client.ErrNotConnected.Error()+" (waited 0s)" {
		t.Fatalf("last error %q", l[0].LastError)
	}
}

func TestManagerAddRemove(t *testing.T) {
	src, dst := sessions(t)
	serveTarget(t, dst, &Target{Allow: allowAll(t)})
	m := NewManager(src, Settings{})
	defer m.Close()
	info, err := m.Add(Spec{Local: "127.0.0.1:0", Gateway: "gw1", IP: "127.0.0.1", Remote: 22}, "api")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Add(Spec{Local: info.Local, Gateway: "gw1", IP: "127.0.0.1", Remote: 23}, "api"); !errors.Is(err, ErrLocalInUse) {
		t.Fatalf("same local twice: %v", err)
	}
	if _, err := m.Add(Spec{Local: "127.0.0.1:0", Gateway: "gw1", IP: "nope", Remote: 22}, "api"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid: %v", err)
	}
	if _, err := m.Remove("127.0.0.1:1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	// A bare port finds the forwarding.
	_, port, _ := net.SplitHostPort(info.Local)
	if got, err := m.Remove(port); err != nil || got.Local != info.Local {
		t.Fatalf("remove by port: %+v %v", got, err)
	}
	if len(m.List()) != 0 {
		t.Fatal("still listed")
	}
	if c, err := net.DialTimeout("tcp", info.Local, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening")
	}
}

// Removing a forwarding also ends the connections it relays.
func TestRemoveEndsActiveConnections(t *testing.T) {
	src, dst := sessions(t)
	serveTarget(t, dst, &Target{Allow: allowAll(t)})
	dest, _ := halfCloseServer(t) // waits for EOF: the relay stays active
	m := NewManager(src, Settings{})
	defer m.Close()
	info, err := m.Add(Spec{Local: "127.0.0.1:0", Gateway: "gw1", IP: "127.0.0.1", Remote: portOf(t, dest)}, "api")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", info.Local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.List()[0].Active != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the connection never became active")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := m.Remove(info.Local); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil && !isReset(err) {
		t.Fatalf("the relayed connection was not closed: %v", err)
	}
}
