package pagekite

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// A request captured from Debian's pagekite 1.5.2 (secret "SECRET"): the
// signature is the real kite's, so this pins KiteSign to the protocol.
const capturedConnect = "CONNECT PageKite:1 HTTP/1.0\r\nX-PageKite-Features: AddKites\r\nX-PageKite-Version: 1.5.2.201011\r\nX-PageKite-Features: ZChunks\r\nX-PageKite-Version: 1.5.2.201011\r\nX-PageKite: https:foo.box.test:09a529bf8961b38a89a05def69fd0b889f13::8068935533692f44ebb520519cf43cc58f94\r\n\r\n"

func TestCapturedRequestSignature(t *testing.T) {
	req, err := ReadRequest(bufio.NewReader(strings.NewReader(capturedConnect)), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "CONNECT" || req.Target != "PageKite:1" || !hasFeature(req.Header, "AddKites") {
		t.Fatalf("parsed %+v", req)
	}
	ks, err := kiteRequests(req.Header, 4)
	if err != nil || len(ks) != 1 {
		t.Fatalf("kites %v %v", ks, err)
	}
	k := ks[0]
	if k.ID() != "https:foo.box.test:09a529bf8961b38a89a05def69fd0b889f13" || k.FEToken != "" {
		t.Fatalf("kite %+v", k)
	}
	if !checkKiteSign("SECRET", k.Payload(), k.Sign) {
		t.Fatal("the real kite's signature does not verify")
	}
	if checkKiteSign("SECRET2", k.Payload(), k.Sign) {
		t.Fatal("a wrong secret verifies")
	}
}

func TestSniff(t *testing.T) {
	for in, want := range map[string]bool{
		"HEAD /ping HTTP/1.1\r\n":          true,
		"CONNECT PageKite:1 HTTP/1.0\r\n":  true,
		"CONN":                             true, // a short prefix: read on
		"\x16\x03\x01\x02\x00\x01":         false,
		"GET / HTTP/1.1\r\n":               false,
		"CONNECT example.org:443 HTTP/1.1": false,
		"":                                 false,
	} {
		if got := Sniff([]byte(in)); got != want {
			t.Errorf("Sniff(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestChallenge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newChallenger([]byte("key"), func() time.Time { return now })
	id := "https:a.example:salt"
	tok := c.issue(id)
	if len(tok) != signLen || tok[0] != 't' || !c.valid(id, tok) {
		t.Fatalf("token %q not valid", tok)
	}
	if c.valid("https:b.example:salt", tok) {
		t.Fatal("token valid for another kite")
	}
	now = now.Add(ChallengeWindow)
	if !c.valid(id, tok) {
		t.Fatal("token not valid in the next window")
	}
	now = now.Add(2 * ChallengeWindow)
	if c.valid(id, tok) {
		t.Fatal("token valid after two windows")
	}
	if !c.consume(tok) || c.consume(tok) {
		t.Fatal("a token must be consumable exactly once")
	}
}

func TestChunkRoundTrip(t *testing.T) {
	frame := AppendChunk(nil, []Field{{"SID", "7"}, {"EOF", "1R"}}, []byte("Bye!"))
	frame = AppendChunk(frame, []Field{{"NOOP", "1"}, {"PING", "1.5"}}, nil)
	br := bufio.NewReader(bytes.NewReader(frame))
	for i, want := range []string{"7", ""} {
		n, err := ReadChunkSize(br, 1024)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, n)
		if _, err := br.Read(p); err != nil {
			t.Fatal(err)
		}
		ch, err := ParseChunk(p)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Header.Get("SID") != want {
			t.Fatalf("chunk %d: %+v", i, ch)
		}
	}
	for in, want := range map[string]error{
		"0\r\n":         ErrTunnelClosed,
		"10Z8\r\n":      ErrZChunks,
		"zz\r\n":        ErrBadChunk,
		"10R\r\n":       ErrZChunks,
		"xyz\r\n":       ErrBadChunk,
		"fffffff\r\n":   ErrChunkTooLarge,
		"123456789\r\n": ErrBadChunk,
	} {
		if _, err := ReadChunkSize(bufio.NewReader(strings.NewReader(in)), 1<<20); !errors.Is(err, want) {
			t.Errorf("%q: %v, want %v", in, err, want)
		}
	}
	if _, err := ParseChunk([]byte("SID: 1\r\nno blank line")); !errors.Is(err, ErrBadChunk) {
		t.Fatalf("no blank line: %v", err)
	}
	if _, err := ParseChunk([]byte("garbage line\r\n\r\n")); !errors.Is(err, ErrBadChunk) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	for _, in := range []string{
		"CONNECT\r\n\r\n",
		"CONNECT PageKite:1 HTTP/1.0\r\nno colon\r\n\r\n",
		"CONNECT PageKite:1 HTTP/1.0\r\nX-PageKite: a:b\r\n\r\n",
	} {
		req, err := ReadRequest(bufio.NewReader(strings.NewReader(in)), 4096)
		if err == nil {
			_, err = kiteRequests(req.Header, 4)
		}
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("%q: %v", in, err)
		}
	}
	long := "CONNECT PageKite:1 HTTP/1.0\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n"
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader(long)), 4096); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("long head: %v", err)
	}
}

func FuzzRequest(f *testing.F) {
	f.Add([]byte(capturedConnect))
	f.Add([]byte("HEAD /ping HTTP/1.1\r\nHost: ping.pagekite\r\n\r\n"))
	f.Add([]byte("CONNECT PageKite:1 HTTP/1.0\r\nX-PageKite: https:a:b:c:d\r\nX-Beanstalk: x:y:z::s\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := ReadRequest(bufio.NewReaderSize(bytes.NewReader(in), 16), 4096)
		if err != nil {
			return
		}
		ks, err := kiteRequests(req.Header, 16)
		if err != nil {
			return
		}
		for _, k := range ks {
			if k.Proto == "" || k.Domain == "" || strings.Contains(k.ID(), "\n") {
				t.Fatalf("accepted %+v", k)
			}
			_ = checkKiteSign("s", k.Payload(), k.Sign)
		}
	})
}

func FuzzChunks(f *testing.F) {
	f.Add(AppendChunk(nil, []Field{{"SID", "1"}, {"Proto", "https"}, {"Host", "a.b"}}, []byte("\x16\x03\x01")))
	f.Add(AppendChunk(nil, []Field{{"NOOP", "1"}, {"SID", "1"}, {"SKB", "12"}}, nil))
	f.Add([]byte("5\r\nab\r\n\r\n10Z8R\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		for range 64 {
			n, err := ReadChunkSize(br, 4096)
			if err != nil {
				return
			}
			if n <= 0 || n > 4096 {
				t.Fatalf("size %d accepted", n)
			}
			p := make([]byte, n)
			if _, err := io.ReadFull(br, p); err != nil {
				return
			}
			ch, err := ParseChunk(p)
			if err != nil {
				continue
			}
			// What parses must survive our own encoding.
			enc := bufio.NewReader(bytes.NewReader(AppendChunk(nil, ch.Header, ch.Data)))
			m, err := ReadChunkSize(enc, 1<<20)
			if err != nil {
				t.Fatalf("re-encoded size: %v", err)
			}
			q := make([]byte, m)
			if _, err := io.ReadFull(enc, q); err != nil {
				t.Fatal(err)
			}
			again, err := ParseChunk(q)
			if err != nil || !bytes.Equal(again.Data, ch.Data) || len(again.Header) != len(ch.Header) {
				t.Fatalf("round trip: %v %+v != %+v", err, again, ch)
			}
		}
	})
}
