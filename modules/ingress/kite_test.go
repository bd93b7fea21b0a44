package ingress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/pagekite"
	"github.com/gatehouse-project/gatehouse/modules/tunnel/hub"
)

// kiteServer is a real PageKite frontend that knows no kite.
func kiteServer() *pagekite.Server {
	return &pagekite.Server{
		Authenticate: func(context.Context, string, string) (string, error) { return "", pagekite.ErrUnknownKite },
		Register:     func(string, hub.Tunnel) error { return nil },
		UUID:         "test-uuid",
	}
}

// readHead reads an HTTP response head (the kite's frontend check has no
// body) from c.
func readHead(t *testing.T, c net.Conn) string {
	t.Helper()
	var b strings.Builder
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil || line == "\r\n" {
			if err != nil {
				t.Fatalf("reading the answer: %v after %q", err, b.String())
			}
			return b.String()
		}
	}
}

// With a PageKite server, a kite's plain-text requests reach it, even sent
// a few bytes at a time, while TLS and other plain text go on as before.
func TestKitesOnTheSamePort(t *testing.T) {
	f := newFixtureConfig(t, Config{Kites: kiteServer(), PeekTimeout: 5 * time.Second})

	t.Run("frontend check", func(t *testing.T) {
		c := f.dial()
		fmt.Fprint(c, "HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n")
		head := readHead(t, c)
		if !strings.HasPrefix(head, "HTTP/1.1 503 Unavailable\r\n") || !strings.Contains(head, "X-PageKite-UUID: test-uuid\r\n") {
			t.Fatalf("answer %q", head)
		}
	})

	t.Run("request in small pieces", func(t *testing.T) {
		c := f.dial()
		for _, p := range []string{"CONN", "ECT Page", "Kite:1 HTTP/1.0\r\n", "X-PageKite: https:a.zone.test:r1::00000000\r\n\r\n"} {
			if _, err := io.WriteString(c, p); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		head := readHead(t, c)
		if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || !strings.Contains(head, "X-PageKite-SignThis: https:a.zone.test:r1:") {
			t.Fatalf("answer %q", head)
		}
	})

	t.Run("other plain text goes to the server", func(t *testing.T) {
		before := f.serverRoutes()
		c := f.dial()
		// "HEAD /" matches the kite's prefix for six bytes, then differs.
		fmt.Fprint(c, "HEAD / HTTP/1.1\r\nHost: api.zone.test\r\n\r\n")
		req, err := http.ReadRequest(bufio.NewReader(f.accept()))
		if err != nil || req.Method != "HEAD" || req.URL.Path != "/" {
			t.Fatalf("%v %v", req, err)
		}
		// The route is counted once the server has the connection, which
		// is after Accept returned it here.
		for deadline := time.Now().Add(5 * time.Second); f.serverRoutes() != before+1; {
			if time.Now().After(deadline) {
				t.Fatal("not counted as a route to the server")
			}
			time.Sleep(time.Millisecond)
		}
	})

	t.Run("a kite prefix cut short goes to the server", func(t *testing.T) {
		c := f.dial()
		fmt.Fprint(c, "HEAD /p")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got := f.accept()
		b, err := io.ReadAll(got)
		if err != nil || string(b) != "HEAD /p" {
			t.Fatalf("replayed %q, %v", b, err)
		}
	})

	t.Run("TLS is not delayed and reaches the gateway", func(t *testing.T) {
		cert, pool := selfSigned(t, "alpha.zone.test")
		f.agent("alpha", tlsGateway(cert, "alpha", nil))
		start := time.Now()
		tc := tls.Client(f.dial(), &tls.Config{ServerName: "alpha.zone.test", RootCAs: pool})
		defer tc.Close()
		fmt.Fprintf(tc, "GET /x HTTP/1.1\r\nHost: alpha.zone.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "alpha /x" {
			t.Fatalf("body %q", body)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("took %v", d)
		}
	})

	t.Run("a ClientHello replayed to the server whole", func(t *testing.T) {
		hello := captureHello(t, "api.zone.test")
		c := f.dial()
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		got := f.accept()
		b := make([]byte, len(hello))
		if _, err := io.ReadFull(got, b); err != nil || !bytes.Equal(b, hello) {
			t.Fatalf("the ClientHello was not replayed: %v", err)
		}
	})
}

// Without a PageKite server (no token_seal_key), a kite's request is plain
// text for the server, as before.
func TestKitesOffGoToServer(t *testing.T) {
	f := newFixture(t, 0)
	c := f.dial()
	fmt.Fprint(c, "HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n")
	req, err := http.ReadRequest(bufio.NewReader(f.accept()))
	if err != nil || req.URL.Path != "/ping" {
		t.Fatalf("%v %v", req, err)
	}
}

// A kite's frontend check within the peek timeout is served; a client that
// stops mid-prefix is closed at the timeout, not held.
func TestKiteSniffTimeout(t *testing.T) {
	f := newFixtureConfig(t, Config{Kites: kiteServer(), PeekTimeout: 300 * time.Millisecond})
	c := f.dial()
	fmt.Fprint(c, "CONNECT Page")
	start := time.Now()
	// The partial prefix is plain text: after the timeout it goes to the
	// server, replayed, like any other plain text.
	got := f.accept()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("held for %v", d)
	}
	b := make([]byte, 12)
	if _, err := io.ReadFull(got, b); err != nil || string(b) != "CONNECT Page" {
		t.Fatalf("replayed %q, %v", b, err)
	}
}
