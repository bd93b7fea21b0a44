package main

import (
	"bytes"
	"crypto/cipher"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

func aeadOf(t *testing.T, hexKey string) cipher.AEAD {
	t.Helper()
	a, err := newAEAD(hexKey)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// echoServer answers each connection with what it sends, then closes.
func echoServer(t *testing.T) string {
	ln := listen(t)
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// tap forwards connections to to and keeps a copy of the bytes sent
// toward to.
type tap struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (tp *tap) Write(p []byte) (int, error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.buf.Write(p)
}

func startTap(t *testing.T, to string) (string, *tap) {
	ln := listen(t)
	tp := &tap{}
	go func() {
		for {
			in, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				c, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				out := c.(*net.TCPConn)
				defer out.Close()
				back := make(chan struct{})
				go func() { _, _ = io.Copy(in, out); _ = in.CloseWrite(); close(back) }()
				_, _ = io.Copy(io.MultiWriter(out, tp), in)
				_ = out.CloseWrite()
				<-back
			}()
		}
	}()
	return ln.Addr().String(), tp
}

const key = "000102030405060708090a0b0c0d0e0f"

// TestRoundTrip sends data through front and back to an echo server and
// back: it must come back whole, the end of stream must pass both ways,
// and between the relays it must be sealed records, not the plaintext.
func TestRoundTrip(t *testing.T) {
	back := listen(t)
	go func() { _ = serve(back, echoServer(t), false, aeadOf(t, key)) }()
	tapAddr, tp := startTap(t, back.Addr().String())
	front := listen(t)
	go func() { _ = serve(front, tapAddr, true, aeadOf(t, key)) }()

	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c) // ends only if the half close came back through both relays
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, want the %d sent", len(got), len(data))
	}
	tp.mu.Lock()
	wire := tp.buf.Bytes()
	tp.mu.Unlock()
	if bytes.Contains(wire, data[:64]) {
		t.Fatal("the plaintext is on the wire between the relays")
	}
	// The connection number, then records of length, ciphertext and tag.
	if min := 4 + len(data) + 20; len(wire) < min {
		t.Fatalf("%d bytes between the relays, want at least %d", len(wire), min)
	}
}

// TestWrongKey: a back whose key differs cannot open the front's records
// and closes the connection instead of passing anything on.
func TestWrongKey(t *testing.T) {
	received := make(chan int, 1)
	srv := listen(t)
	go func() {
		c, err := srv.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		received <- int(n)
	}()
	back := listen(t)
	go func() { _ = serve(back, srv.Addr().String(), false, aeadOf(t, "ff"+key[2:])) }()
	front := listen(t)
	go func() { _ = serve(front, back.Addr().String(), true, aeadOf(t, key)) }()

	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 10)); err == nil {
		t.Fatalf("read %d bytes, want the connection closed", n)
	}
	select {
	case n := <-received:
		if n != 0 {
			t.Fatalf("the server got %d bytes, want none", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the back kept the server's connection open")
	}
}

// TestMain lets TestProcesses run this test binary as the relay.
func TestMain(m *testing.M) {
	if os.Getenv("FLOORRELAY_TEST_MAIN") == "1" {
		os.Args = append(os.Args[:1], strings.Fields(os.Getenv("FLOORRELAY_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

// TestProcesses runs the back and the front as processes, as the
// benchmark does: each reports the port it got in its -addr-file, and a
// client's bytes go to the echo server and back through both.
func TestProcesses(t *testing.T) {
	dir := t.TempDir()
	start := func(mode, to string) string {
		file := filepath.Join(dir, mode+".addr")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "FLOORRELAY_TEST_MAIN=1", "FLOORRELAY_KEY="+key,
			"FLOORRELAY_TEST_ARGS=-mode "+mode+" -listen 127.0.0.1:0 -to "+to+" -addr-file "+file)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		deadline := time.Now().Add(10 * time.Second)
		for {
			addr, err := os.ReadFile(file)
			if err == nil {
				return string(addr)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s relay wrote no address: %v", mode, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	front := start("front", start("back", echoServer(t)))

	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("through two relay processes")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %q, %v; want %q", got, err, msg)
	}
}
