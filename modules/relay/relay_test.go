package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// A copy holds a small buffer while its peers are quiet, a large one only
// while reads fill the buffer.
func TestCopyBuffers(t *testing.T) {
	var sizes []int
	src := readerFunc(func(p []byte) (int, error) {
		sizes = append(sizes, len(p))
		switch len(sizes) {
		case 1, 2:
			return len(p), nil // full: bulk
		case 3:
			return 10, nil // drained
		case 4:
			return 1, nil
		}
		return 0, io.EOF
	})
	var out bytes.Buffer
	var counted int
	n, err := Copy(&out, src, func(w int) { counted += w })
	if err != nil {
		t.Fatal(err)
	}
	want := []int{SmallBuffer, LargeBuffer, LargeBuffer, SmallBuffer, SmallBuffer}
	if fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("buffer sizes %v, want %v", sizes, want)
	}
	if n != int64(out.Len()) || n != SmallBuffer+LargeBuffer+10+1 || counted != int(n) {
		t.Fatalf("copied %d, wrote %d, counted %d", n, out.Len(), counted)
	}
}

func TestCopyReportsErrors(t *testing.T) {
	boom := errors.New("boom")
	if _, err := Copy(io.Discard, readerFunc(func([]byte) (int, error) { return 0, boom }), nil); !errors.Is(err, boom) {
		t.Fatalf("read error: %v", err)
	}
	src := bytes.NewReader([]byte("data"))
	if n, err := Copy(writerFunc(func([]byte) (int, error) { return 2, boom }), src, nil); !errors.Is(err, boom) || n != 2 {
		t.Fatalf("write error: %d, %v", n, err)
	}
}

// halfCloseServer answers each connection, once the client has finished
// sending, with how many bytes it got: it needs the client's half-close to
// reach it, and its answer to come back after it.
func halfCloseServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "got %d bytes", len(b))
			}()
		}
	}()
	return ln.Addr().String()
}

// front accepts one connection and relays it to dest with Conns.
func front(t *testing.T, ctx context.Context, dest string, counts Counts) (string, <-chan Result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	res := make(chan Result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		d, err := net.Dial("tcp", dest)
		if err != nil {
			return
		}
		defer d.Close()
		res <- Conns(ctx, c, d, counts)
	}()
	return ln.Addr().String(), res
}

func TestConnsPassesHalfClosesOn(t *testing.T) {
	var up, down atomic.Int64
	addr, res := front(t, context.Background(), halfCloseServer(t), Counts{
		AToB: func(n int) { up.Add(int64(n)) },
		BToA: func(n int) { down.Add(int64(n)) },
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello world"))
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 11 bytes" {
		t.Fatalf("answer %q, %v", got, err)
	}
	r := <-res
	if r.AToB != 11 || r.BToA != int64(len(got)) || r.AToBErr != nil || r.BToAErr != nil {
		t.Fatalf("result %+v", r)
	}
	if up.Load() != r.AToB || down.Load() != r.BToA {
		t.Fatalf("counted %d/%d, copied %d/%d", up.Load(), down.Load(), r.AToB, r.BToA)
	}
}

// Ending ctx closes both connections, even while both sides are silent.
func TestConnsEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr, res := front(t, ctx, halfCloseServer(t), Counts{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-res:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay outlived its context")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 && err == nil {
		t.Fatalf("the client read %q after the relay ended", b)
	}
}

// A connection that cannot half-close is closed when its direction ends.
func TestConnsClosesWhatCannotHalfClose(t *testing.T) {
	a, aPeer := net.Pipe() // net.Pipe has no CloseWrite
	b, bPeer := net.Pipe()
	done := make(chan Result, 1)
	go func() { done <- Conns(context.Background(), a, b, Counts{}) }()
	go func() {
		aPeer.Write([]byte("ping"))
		aPeer.Close()
	}()
	bPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(bPeer)
	if err != nil || string(got) != "ping" {
		t.Fatalf("b's peer read %q, %v", got, err)
	}
	bPeer.Close()
	select {
	case r := <-done:
		if r.AToB != 4 {
			t.Fatalf("result %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not end")
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
