package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

func newIO(t *testing.T, c net.Conn) *IO {
	t.Helper()
	s := New(c)
	if s == nil {
		t.Fatalf("New(%T) = nil on %s", c, runtime.GOOS)
	}
	return s
}

func TestReadWrite(t *testing.T) {
	a, b := testtools.TCPPair(t)
	ra, rb := newIO(t, a), newIO(t, b)
	// More than a socket buffer, so that Write has to wait for room
	// while the reader drains it.
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	done := make(chan error, 1)
	go func() {
		n, err := ra.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = a.CloseWrite()
		}
		done <- err
	}()
	got, err := io.ReadAll(rb)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
	// After the peer's half-close: EOF, as net.Conn says it.
	if n, err := rb.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := rb.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty Read = %d, %v; want 0, nil", n, err)
	}
}

func TestReadDeadline(t *testing.T) {
	a, _ := testtools.TCPPair(t)
	s := newIO(t, a)
	if err := a.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := s.Read(make([]byte, 8))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v is not a net.Error timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || oe.Net != "tcp" || oe.Addr == nil || oe.Source == nil {
		t.Fatalf("Read past the deadline: %#v; want a net.OpError of a read with both addresses", err)
	}
	if d := time.Since(start); d < 15*time.Millisecond {
		t.Fatalf("Read returned after %v, before its deadline", d)
	}
}

func TestClosed(t *testing.T) {
	a, _ := testtools.TCPPair(t)
	s := newIO(t, a)
	a.Close()
	if _, err := s.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed conn: %v; want net.ErrClosed", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed conn: %v; want net.ErrClosed", err)
	}
	if _, err := s.TryWrite([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryWrite on a closed conn: %v; want net.ErrClosed", err)
	}
}

// A blocked Read returns as soon as the connection is closed, as on
// net.Conn: it waits through the runtime's poller, not in the kernel.
func TestCloseUnblocksRead(t *testing.T) {
	a, _ := testtools.TCPPair(t)
	s := newIO(t, a)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read ended with %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
}

func TestWriteError(t *testing.T) {
	a, b := testtools.TCPPair(t)
	s := newIO(t, a)
	// A reset: the peer closes with unread data, so the kernel answers
	// with RST and a later write fails with a system call error.
	if _, err := a.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	b.Close()
	time.Sleep(20 * time.Millisecond)
	var err error
	for range 100 {
		if _, err = s.Write([]byte("after the reset")); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var se *os.SyscallError
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" || !errors.As(err, &se) || se.Syscall != "write" {
		t.Fatalf("Write after a reset: %#v; want a net.OpError of a write wrapping the system call's error", err)
	}
}

func TestTryWriteNeverWaits(t *testing.T) {
	a, b := testtools.TCPPair(t)
	s := newIO(t, a)
	// Nobody reads b: TryWrite fills the send and receive buffers and
	// then returns short, without an error and without waiting.
	p := make([]byte, 1<<20)
	total := 0
	for i := 0; ; i++ {
		n, err := s.TryWrite(p)
		if err != nil {
			t.Fatalf("TryWrite: %v", err)
		}
		total += n
		if n < len(p) {
			break
		}
		if i == 64 {
			t.Fatalf("TryWrite took %d bytes nobody reads and never came back short", total)
		}
	}
	// What it did write arrives.
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(b, make([]byte, total)); err != nil {
		t.Fatalf("reading the %d bytes TryWrite wrote: %v", total, err)
	}
}

func TestNewOnlySockets(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if New(c1) != nil {
		t.Fatal("New(net.Pipe) is not nil")
	}
}

func TestWrap(t *testing.T) {
	a, b := testtools.TCPPair(t)
	wa := Wrap(a)
	sc, ok := wa.(*Conn)
	if !ok {
		t.Fatalf("Wrap(*net.TCPConn) = %T, want *Conn", wa)
	}
	if sc.NetConn() != a {
		t.Fatal("NetConn is not the wrapped socket")
	}
	if _, err := wa.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := sc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "ping" {
		t.Fatalf("peer read %q, %v; want ping and EOF", got, err)
	}
	if _, err := b.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	got, err = io.ReadAll(wa)
	if err != nil || string(got) != "pong" {
		t.Fatalf("read %q, %v; want pong and EOF", got, err)
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if Wrap(c1) != c1 {
		t.Fatal("Wrap(net.Pipe) did not return the pipe itself")
	}
}

// TestWriteBuffers writes more than the socket buffers hold as many
// buffers of odd sizes (and some empty ones), so that the writev is cut
// short inside a buffer and has to wait for room, while a slow reader
// drains; every byte must arrive in order, and the buffers be consumed.
func TestWriteBuffers(t *testing.T) {
	a, b := testtools.TCPPair(t)
	w := newIO(t, a)
	var bufs net.Buffers
	var want []byte
	for i := range 300 {
		p := make([]byte, (i*7919)%40000)
		for j := range p {
			p[j] = byte(i + j)
		}
		bufs = append(bufs, p)
		want = append(want, p...)
	}
	got := make(chan []byte, 1)
	go func() {
		var all []byte
		buf := make([]byte, 3000)
		for {
			time.Sleep(50 * time.Microsecond)
			n, err := b.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				got <- all
				return
			}
		}
	}()
	n, err := w.WriteBuffers(&bufs)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("WriteBuffers: %d, %v; want %d", n, err, len(want))
	}
	if len(bufs) != 0 {
		t.Errorf("%d buffers left unconsumed", len(bufs))
	}
	a.CloseWrite()
	if all := <-got; !bytes.Equal(all, want) {
		t.Fatalf("read %d bytes, they differ from the %d written", len(all), len(want))
	}
	// A deadline in the past ends a writev that has to wait.
	a2, _ := testtools.TCPPair(t)
	w2 := newIO(t, a2)
	a2.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	big := net.Buffers{make([]byte, 64<<20)}
	if _, err := w2.WriteBuffers(&big); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writev past the deadline: %v", err)
	}
}
