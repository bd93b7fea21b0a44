package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/tunnel"
)

// pattern is n bytes that show a reordered, lost or repeated piece.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/251 + i)
	}
	return b
}

// bulkApp serves /known?n=N (with Content-Length) and /unknown?n=N
// (chunked) of pattern(N), written in 256 KiB pieces as a file server would.
func bulkApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		body := pattern(n)
		if r.URL.Path == "/known" {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		for len(body) > 0 {
			k := min(len(body), 256<<10)
			if _, err := w.Write(body[:k]); err != nil {
				return
			}
			body = body[k:]
		}
	})
}

// A large response crosses the tunnel intact and, over HTTP/1.1, in few
// Data frames: each write the HTTP layer makes into the TLS connection
// leaves as one write to the stream, not one per TLS record (16 KiB, or
// about 1.2 KiB at the start of a connection), and a write is
// ReverseProxy's copy buffer, which fits one frame. The count is an upper
// bound whatever the timing: the session's writer merging frames that
// queue up can only lower it. HTTP/2 is not batched (see batch.go): its
// count depends on that merging, so it is only logged.
func TestLargeResponsesCrossInFewFrames(t *testing.T) {
	app := httptest.NewServer(bulkApp())
	defer app.Close()
	const size = 1 << 20
	want := pattern(size)
	for _, tc := range []struct {
		name      string
		h2        bool
		path      string
		maxFrames int64
	}{
		// The TLS handshake and headers take a few frames; the first
		// 128 KiB, in small records, may make a write a frame and a bit.
		{"HTTP/1.1 with Content-Length", false, "/known", size/tunnel.MaxDataSize + 12},
		{"HTTP/1.1 chunked", false, "/unknown", size/tunnel.MaxDataSize + 12},
		{"HTTP/2", true, "/known", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cloud, pool, frames := countedAgentFor(t, app.URL, Config{})
			hc := visitor(t, cloud, pool, "203.0.113.5:4444", tc.h2)
			before := frames.Load()
			resp, err := hc.Get(fmt.Sprintf("https://home.box.test%s?n=%d", tc.path, size))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.ProtoMajor != map[bool]int{false: 1, true: 2}[tc.h2] {
				t.Errorf("visitor got %s", resp.Proto)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("body of %d bytes differs from the app's %d", len(got), len(want))
			}
			n := frames.Load() - before
			t.Logf("%d Data frames from the agent for %d bytes", n, size)
			if tc.maxFrames > 0 && n > tc.maxFrames {
				t.Errorf("the response took %d Data frames, want at most %d", n, tc.maxFrames)
			}
		})
	}
}

// A response that is never flushed keeps net/http's buffering: the error
// page for a dead app still goes out with its Content-Length, not chunked.
func TestErrorPageKeepsItsLengthOverHTTP1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	_, cloud, pool := agentFor(t, "http://"+dead, Config{})
	resp, err := visitor(t, cloud, pool, "203.0.113.5:4444", false).Get("https://home.box.test/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || resp.ContentLength != int64(len(b)) || len(resp.TransferEncoding) != 0 {
		t.Fatalf("%s, Content-Length %d for %d bytes, Transfer-Encoding %q", resp.Status, resp.ContentLength, len(b), resp.TransferEncoding)
	}
}

// The agent's LAN listener terminates TLS with the same batching: HTTP/2
// offered, Request.TLS set (the app is told https), a large body intact.
func TestLANListener(t *testing.T) {
	app := httptest.NewServer(echoApp(t, nil))
	defer app.Close()
	bulk := httptest.NewServer(bulkApp())
	defer bulk.Close()
	for _, tc := range []struct {
		name string
		up   string
	}{{"echo", app.URL}, {"bulk", bulk.URL}} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, pool := agentFor(t, tc.up, Config{})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve(ln) }()
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = s.Shutdown(ctx)
				if err := <-served; err != nil && err != http.ErrServerClosed {
					t.Errorf("Serve: %v", err)
				}
			}()
			tr := &http.Transport{
				ForceAttemptHTTP2: true,
				TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "example.com"},
			}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 15 * time.Second}
			if tc.name == "echo" {
				req, _ := http.NewRequest("GET", "https://"+ln.Addr().String()+"/", nil)
				req.Host = "local.home.box.test"
				e, resp := getEcho(t, hc, req)
				if resp.ProtoMajor != 2 || e.Host != "local.home.box.test" || e.Header.Get("X-Forwarded-Proto") != "https" {
					t.Fatalf("%s: host %q, X-Forwarded-Proto %q", resp.Proto, e.Host, e.Header.Get("X-Forwarded-Proto"))
				}
				return
			}
			resp, err := hc.Get("https://" + ln.Addr().String() + "/known?n=3000000")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, pattern(3000000)) {
				t.Fatalf("%d bytes, %v", len(got), err)
			}
		})
	}
}

// BenchmarkLargeResponse downloads 64 MiB through an in-memory tunnel
// session pair and the proxy, over HTTP/1.1 and HTTP/2, and reports the
// Data frames the agent's session sent per MiB.
func BenchmarkLargeResponse(b *testing.B) {
	app := httptest.NewServer(bulkApp())
	defer app.Close()
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(b *testing.B) {
			_, cloud, pool, frames := countedAgentFor(b, app.URL, Config{})
			hc := visitor(b, cloud, pool, "203.0.113.5:4444", h2)
			const size = 64 << 20
			b.SetBytes(size)
			f0 := frames.Load()
			for b.Loop() {
				resp, err := hc.Get(fmt.Sprintf("https://home.box.test/known?n=%d", size))
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n != size {
					b.Fatalf("%d bytes", n)
				}
			}
			b.ReportMetric(float64(frames.Load()-f0)/float64(b.N)/(size>>20), "frames/MiB")
		})
	}
}
