package clienthello

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gatehouse-project/gatehouse/internal/testtools"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// manyProtocols returns n distinct ALPN protocol names of size bytes each.
func manyProtocols(n, size int) []string {
	protos := make([]string, n)
	for i := range protos {
		p := fmt.Sprintf("proto-%04d-", i)
		protos[i] = p + strings.Repeat("x", size-len(p))
	}
	return protos
}

func TestPeekRealClientHellos(t *testing.T) {
	tests := []struct {
		name     string
		cfg      *tls.Config
		maxBytes int
		want     Info
		records  int // TLS records crypto/tls used
	}{
		{
			name: "sni",
			cfg:  &tls.Config{ServerName: "myhome.box.example.org"},
			want: Info{ServerName: "myhome.box.example.org"},
		},
		{
			name: "sni is lower-cased",
			cfg:  &tls.Config{ServerName: "MyHome.BOX.example.org"},
			want: Info{ServerName: "myhome.box.example.org"},
		},
		{
			name: "no sni when dialing an address",
			cfg:  &tls.Config{ServerName: "203.0.113.10"},
			want: Info{},
		},
		{
			name: "no sni at all",
			cfg:  &tls.Config{InsecureSkipVerify: true},
			want: Info{},
		},
		{
			name: "alpn",
			cfg:  &tls.Config{ServerName: "api.box.example.org", NextProtos: []string{"h2", "http/1.1"}},
			want: Info{ServerName: "api.box.example.org", ALPN: []string{"h2", "http/1.1"}},
		},
		{
			name: "tls 1.2 only client",
			cfg:  &tls.Config{ServerName: "a.box.example.org", MaxVersion: tls.VersionTLS12},
			want: Info{ServerName: "a.box.example.org"},
		},
		{
			name: "tls 1.3 only client with post-quantum key share",
			cfg: &tls.Config{ServerName: "pq.box.example.org", MinVersion: tls.VersionTLS13,
				CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}},
			want: Info{ServerName: "pq.box.example.org"},
		},
		{
			name:     "huge hello over two records",
			cfg:      &tls.Config{ServerName: "big.box.example.org", NextProtos: manyProtocols(100, 200)},
			maxBytes: 64 << 10,
			want:     Info{ServerName: "big.box.example.org", ALPN: manyProtocols(100, 200)},
			records:  2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire := captureHello(t, tt.cfg)
			if tt.records > 0 {
				if got := countRecords(t, wire); got != tt.records {
					t.Fatalf("crypto/tls sent %d records, the test wants %d", got, tt.records)
				}
			}
			for _, chunk := range []int{0, 1, 3, 100, 1000} {
				// Bytes after the ClientHello (say a pipelined early
				// write) must be replayed too.
				input := append(slices.Clone(wire), "after"...)
				conn := newMemConn(input, chunk)
				info, replay, err := Peek(conn, tt.maxBytes, time.Second)
				if err != nil {
					t.Fatalf("chunk %d: Peek: %v", chunk, err)
				}
				checkInfo(t, info, &tt.want)
				got, err := io.ReadAll(replay)
				if err != nil {
					t.Fatalf("chunk %d: reading replay: %v", chunk, err)
				}
				if !bytes.Equal(got, input) {
					t.Fatalf("chunk %d: replay gave %d bytes, want the %d read", chunk, len(got), len(input))
				}
				if n := len(conn.deadlines); n != 2 || conn.deadlines[0].IsZero() || !conn.deadlines[1].IsZero() {
					t.Fatalf("chunk %d: deadlines %v, want one set then cleared", chunk, conn.deadlines)
				}
			}
			parsed, err := Parse(wire)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkInfo(t, parsed, &tt.want)
		})
	}
}

func countRecords(t *testing.T, wire []byte) int {
	t.Helper()
	n := 0
	for len(wire) >= recordHeaderLen {
		wire = wire[recordHeaderLen+int(wire[3])<<8|int(wire[4]):]
		n++
	}
	return n
}

func checkInfo(t *testing.T, got, want *Info) {
	t.Helper()
	if got == nil {
		t.Fatal("nil Info")
	}
	if got.ServerName != want.ServerName || !slices.Equal(got.ALPN, want.ALPN) {
		t.Fatalf("got %q %q, want %q %q", got.ServerName, got.ALPN, want.ServerName, want.ALPN)
	}
}

// TestPeekFragmented re-chunks a real ClientHello into many small records,
// which clients and middleboxes are allowed to do; the handshake header
// itself is split when the records are shorter than four bytes.
func TestPeekFragmented(t *testing.T) {
	wire := captureHello(t, &tls.Config{ServerName: "frag.box.example.org", NextProtos: []string{"h2"}})
	msg := handshakeBytes(t, wire)
	for _, size := range []int{1, 2, 3, 5, 64, 500, len(msg) - 1} {
		for _, chunk := range []int{0, 1, 7} {
			conn := newMemConn(records(msg, size), chunk)
			info, replay, err := Peek(conn, 0, time.Second)
			if err != nil {
				t.Fatalf("records of %d, reads of %d: %v", size, chunk, err)
			}
			checkInfo(t, info, &Info{ServerName: "frag.box.example.org", ALPN: []string{"h2"}})
			if replay.Buffered() != len(records(msg, size)) {
				t.Fatalf("records of %d: %d bytes buffered, want %d", size, replay.Buffered(), len(records(msg, size)))
			}
		}
	}
}

// TestPeekCraftedLargeHello covers what crypto/tls never sends: a padding
// extension and many unknown extensions pushing a valid ClientHello over
// several records.
func TestPeekCraftedLargeHello(t *testing.T) {
	spec := helloSpec{exts: []ext{{typ: 21, data: make([]byte, 9000)}}} // padding (RFC 7685)
	for i := range 200 {
		spec.exts = append(spec.exts, ext{typ: uint16(0x4000 + i), data: []byte("opaque")})
	}
	spec.exts = append(spec.exts, sniExt("Padded.Box.Example.Org"), alpnExt("http/1.1"))
	msg := spec.build()
	for _, size := range []int{maxPlaintext, 4000, 777} {
		info, replay, err := Peek(newMemConn(records(msg, size), 1500), 0, time.Second)
		if err != nil {
			t.Fatalf("records of %d: %v", size, err)
		}
		checkInfo(t, info, &Info{ServerName: "padded.box.example.org", ALPN: []string{"http/1.1"}})
		if replay.Buffered() != len(records(msg, size)) {
			t.Fatalf("replay holds %d bytes, want %d", replay.Buffered(), len(records(msg, size)))
		}
	}
}

func TestPeekTooLarge(t *testing.T) {
	wire := captureHello(t, &tls.Config{ServerName: "big.box.example.org", NextProtos: manyProtocols(100, 200)})
	for _, maxBytes := range []int{0, 1000, 100} {
		conn := newMemConn(wire, 0)
		info, replay, err := Peek(conn, maxBytes, time.Second)
		if !errors.Is(err, ErrTooLarge) || info != nil {
			t.Fatalf("max %d: got %v, %v; want ErrTooLarge", maxBytes, info, err)
		}
		limit := maxBytes
		if limit <= 0 {
			limit = DefaultMaxBytes
		}
		if replay == nil || replay.Buffered() > limit {
			t.Fatalf("max %d: replay %v holds more than the limit", maxBytes, replay)
		}
	}
}

func TestPeekTruncated(t *testing.T) {
	wire := captureHello(t, &tls.Config{ServerName: "cut.box.example.org"})
	for _, cut := range []int{1, 4, 5, 6, 50, len(wire) - 1} {
		info, replay, err := Peek(newMemConn(wire[:cut], 0), 0, time.Second)
		if !errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF) || info != nil {
			t.Fatalf("cut at %d: got %v, %v; want ErrTruncated", cut, info, err)
		}
		if got, _ := io.ReadAll(replay); !bytes.Equal(got, wire[:cut]) {
			t.Fatalf("cut at %d: replay gave %d bytes, want %d", cut, len(got), cut)
		}
		if _, err := Parse(wire[:cut]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("Parse cut at %d: %v, want ErrTruncated", cut, err)
		}
	}
	_, replay, err := Peek(newMemConn(nil, 0), 0, time.Second)
	if !errors.Is(err, io.EOF) || errors.Is(err, ErrTruncated) || replay == nil {
		t.Fatalf("empty connection: %v, want io.EOF", err)
	}
}

func TestPeekNotTLS(t *testing.T) {
	const request = "GET / HTTP/1.1\r\nHost: api.box.example.org\r\n\r\n"
	for _, input := range []string{request, "\x16\x01garbage", "SSH-2.0-OpenSSH_9.6\r\n", "\x80\x2e\x01\x00\x02"} {
		info, replay, err := Peek(newMemConn([]byte(input), 0), 0, time.Second)
		if !errors.Is(err, ErrNotTLS) || info != nil {
			t.Fatalf("%q: got %v, %v; want ErrNotTLS", input, info, err)
		}
		if got, _ := io.ReadAll(replay); string(got) != input {
			t.Fatalf("%q: replay gave %q", input, got)
		}
	}
	// The replay connection can be handed to an HTTP server as is.
	_, replay, _ := Peek(newMemConn([]byte(request), 1), 0, time.Second)
	req, err := http.ReadRequest(bufio.NewReader(replay))
	if err != nil || req.Host != "api.box.example.org" {
		t.Fatalf("reading the replayed request: %v, %v", req, err)
	}
}

func TestParseMalformed(t *testing.T) {
	valid := helloSpec{exts: []ext{sniExt("ok.box.example.org")}}
	if _, err := Parse(records(valid.build(), 1000)); err != nil {
		t.Fatalf("the valid base hello fails: %v", err)
	}
	tests := []struct {
		name string
		wire []byte
	}{
		{"server hello", records(helloSpec{msgType: 2}.build(), 1000)},
		{"alert in the middle", append(records(valid.build()[:10], 10), 0x15, 3, 3, 0, 2, 2, 40)},
		{"zero-length record", append(records(valid.build()[:10], 10), 0x16, 3, 1, 0, 0)},
		{"record over 16 KiB", []byte{0x16, 3, 1, 0x40, 0x01}},
		{"bad record version mid-hello", append(records(valid.build()[:10], 10), 0x16, 2, 0, 0, 1, 0)},
		{"client version 2.0", records(helloSpec{version: 0x0200}.build(), 1000)},
		{"session id of 33 bytes", records(helloSpec{sessionID: make([]byte, 33)}.build(), 1000)},
		{"no cipher suites", records(helloSpec{suites: []uint16{}}.build(), 1000)},
		{"trailing bytes", records(helloSpec{exts: []ext{sniExt("a.b")}, trailing: []byte{0}}.build(), 1000)},
		{"duplicate extension", records(helloSpec{exts: []ext{sniExt("a.b"), alpnExt("h2"), sniExt("c.d")}}.build(), 1000)},
		{"two host names", records(helloSpec{exts: []ext{sniExt("a.b", "c.d")}}.build(), 1000)},
		{"trailing dot", records(helloSpec{exts: []ext{sniExt("a.b.")}}.build(), 1000)},
		{"empty host name", records(helloSpec{exts: []ext{sniExt("")}}.build(), 1000)},
		{"empty server name list", records(helloSpec{exts: []ext{{extServerName, []byte{0, 0}}}}.build(), 1000)},
		{"short server name", records(helloSpec{exts: []ext{{extServerName, []byte{0, 5, 0, 0, 9, 'a'}}}}.build(), 1000)},
		{"empty alpn protocol", records(helloSpec{exts: []ext{alpnExt("h2", "")}}.build(), 1000)},
		{"empty alpn list", records(helloSpec{exts: []ext{{extALPN, []byte{0, 0}}}}.build(), 1000)},
		{"extension overruns its block", records(helloSpec{noExts: true, trailing: []byte{0, 4, 0x12, 0x34, 0, 9}}.build(), 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.wire); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse: %v, want ErrMalformed", err)
			}
			info, replay, err := Peek(newMemConn(tt.wire, 0), 0, time.Second)
			if !errors.Is(err, ErrMalformed) || info != nil || replay == nil {
				t.Fatalf("Peek: %v, %v; want ErrMalformed", info, err)
			}
		})
	}
}

func TestParseEdgeCases(t *testing.T) {
	tests := []struct {
		name string
		spec helloSpec
		want Info
	}{
		{"no extensions block", helloSpec{noExts: true}, Info{}},
		{"unknown name type skipped", helloSpec{exts: []ext{{extServerName, []byte{0, 4, 7, 0, 1, 'x'}}}}, Info{}},
		{"non-ascii bytes kept", helloSpec{exts: []ext{sniExt("XN--Caf-Dma.\xc3\x89")}}, Info{ServerName: "xn--caf-dma.\xc3\x89"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := Parse(records(tt.spec.build(), 1000))
			if err != nil {
				t.Fatal(err)
			}
			checkInfo(t, info, &tt.want)
		})
	}
}

// TestPeekThroughTCP peeks a real TCP connection fed by a real TLS client in
// separate writes, then completes the handshake over the replay connection:
// the TLS server sees the ClientHello untouched.
func TestPeekThroughTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverCfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t, "myhome.box.example.org")}, NextProtos: []string{"h2"}}

	type result struct {
		info *Info
		msg  string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		info, replay, err := Peek(c, 0, 5*time.Second)
		if err != nil {
			done <- result{err: err}
			return
		}
		srv := tls.Server(replay, serverCfg)
		line, err := bufio.NewReader(srv).ReadString('\n')
		if err == nil {
			_, err = io.WriteString(srv, "pong\n")
		}
		done <- result{info, line, err}
	}()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// Dribble the client's writes so the ClientHello arrives in several
	// TCP reads.
	client := tls.Client(&slowWriter{Conn: raw, chunk: 100, pause: 2 * time.Millisecond}, &tls.Config{
		ServerName: "MyHome.box.example.org", NextProtos: []string{"h2"}, InsecureSkipVerify: true,
	})
	if _, err := io.WriteString(client, "ping\n"); err != nil {
		t.Fatal(err)
	}
	answer, err := bufio.NewReader(client).ReadString('\n')
	if err != nil || answer != "pong\n" {
		t.Fatalf("client got %q, %v", answer, err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkInfo(t, r.info, &Info{ServerName: "myhome.box.example.org", ALPN: []string{"h2"}})
	if r.msg != "ping\n" {
		t.Fatalf("server read %q", r.msg)
	}
	if p := client.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q", p)
	}
}

// slowWriter splits writes into small pauses-separated pieces.
type slowWriter struct {
	net.Conn
	chunk int
	pause time.Duration
}

func (w *slowWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n, err := w.Conn.Write(p[:min(w.chunk, len(p))])
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
		time.Sleep(w.pause)
	}
	return written, nil
}

// TestPeekTimeout has a client send half a ClientHello and stall: Peek gives
// up at its deadline, and clears it, so the connection stays usable.
func TestPeekTimeout(t *testing.T) {
	wire := captureHello(t, &tls.Config{ServerName: "slow.box.example.org"})
	client, server := testtools.TCPPair(t)
	if _, err := client.Write(wire[:100]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	info, replay, err := Peek(server, 0, 150*time.Millisecond)
	if !isTimeout(err) || !errors.Is(err, os.ErrDeadlineExceeded) || info != nil {
		t.Fatalf("got %v, %v; want a timeout", info, err)
	}
	if elapsed := time.Since(start); elapsed < 140*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("Peek returned after %v", elapsed)
	}
	// Past the old deadline, the rest arrives and reads succeed.
	time.Sleep(200 * time.Millisecond)
	if _, err := client.Write(wire[100:]); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(wire))
	if _, err := io.ReadFull(replay, got); err != nil {
		t.Fatalf("reading after the timeout: %v", err)
	}
	if !bytes.Equal(got, wire) {
		t.Fatal("replay and wire differ")
	}
}

// TestPeekSilentClient: a client that connects and says nothing.
func TestPeekSilentClient(t *testing.T) {
	_, server := testtools.TCPPair(t)
	_, replay, err := Peek(server, 0, 50*time.Millisecond)
	if !isTimeout(err) || replay == nil || replay.Buffered() != 0 {
		t.Fatalf("got %v, want a timeout with nothing buffered", err)
	}
}

func TestConnWriteToAndCloseWrite(t *testing.T) {
	wire := captureHello(t, &tls.Config{ServerName: "copy.box.example.org"})
	client, server := testtools.TCPPair(t)
	if _, err := client.Write(wire); err != nil {
		t.Fatal(err)
	}
	_, replay, err := Peek(server, 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n, err := io.Copy(&out, replay) // goes through WriteTo
	if err != nil || n != int64(len(wire)+4) || !bytes.Equal(out.Bytes(), append(slices.Clone(wire), "tail"...)) {
		t.Fatalf("copied %d bytes, %v", n, err)
	}
	if err := replay.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite on TCP: %v", err)
	}
	if replay.NetConn() != server {
		t.Fatal("NetConn is not the wrapped connection")
	}
	var pipeReplay = &Conn{Conn: newMemConn(nil, 0)}
	if err := pipeReplay.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite without support: %v", err)
	}
}

// TestConnConcurrentReads checks the replay buffer under -race.
func TestConnConcurrentReads(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	c := &Conn{Conn: newMemConn(nil, 0), buf: slices.Clone(data)}
	results := make(chan int, 8)
	for range 8 {
		go func() {
			total := 0
			p := make([]byte, 7)
			for {
				n, err := c.Read(p)
				total += n
				if err != nil {
					results <- total
					return
				}
			}
		}()
	}
	total := 0
	for range 8 {
		total += <-results
	}
	if total != len(data) {
		t.Fatalf("readers got %d bytes, want %d", total, len(data))
	}
}

func selfSigned(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
