package clienthello

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes to Parse and, through an in-memory
// connection read in small pieces, to Peek. The seed corpus in
// testdata/fuzz/FuzzParse holds real crypto/tls ClientHellos, whole and
// re-chunked into small records.
func FuzzParse(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: api.box.example.org\r\n\r\n"))
	f.Add([]byte{})
	f.Add(records(helloSpec{exts: []ext{sniExt("A.b"), alpnExt("h2", "http/1.1")}}.build(), 7))
	const maxBytes = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Parse(data)
		if err == nil {
			if info.ServerName != strings.ToLower(info.ServerName) && isASCII(info.ServerName) {
				t.Fatalf("server name %q not lower-cased", info.ServerName)
			}
			for _, p := range info.ALPN {
				if p == "" {
					t.Fatal("empty alpn protocol accepted")
				}
			}
		}

		// Peek must agree with Parse whatever the read sizes, and give
		// back every byte it read.
		conn := newMemConn(data, 1+len(data)%13)
		pinfo, replay, perr := Peek(conn, maxBytes, time.Second)
		switch {
		case errors.Is(perr, ErrTooLarge):
			// Peek may stop as soon as the announced lengths exceed the
			// limit, before Parse, which has every byte, finds a later
			// flaw; it must not refuse what fits, though.
			if err == nil && len(data) <= maxBytes {
				t.Fatalf("Parse succeeded, Peek: %v", perr)
			}
		case err == nil:
			if perr != nil {
				t.Fatalf("Parse succeeded, Peek failed: %v", perr)
			}
			if pinfo.ServerName != info.ServerName || len(pinfo.ALPN) != len(info.ALPN) {
				t.Fatalf("Peek %+v, Parse %+v", pinfo, info)
			}
		case errors.Is(err, ErrTruncated):
			if !errors.Is(perr, ErrTruncated) && !errors.Is(perr, io.EOF) {
				t.Fatalf("Parse: %v, Peek: %v", err, perr)
			}
		default:
			for _, sentinel := range []error{ErrNotTLS, ErrMalformed} {
				if errors.Is(err, sentinel) != errors.Is(perr, sentinel) {
					t.Fatalf("Parse: %v, Peek: %v", err, perr)
				}
			}
		}
		got, rerr := io.ReadAll(replay)
		if rerr != nil || !bytes.Equal(got, data) {
			t.Fatalf("replay gave %d bytes (%v), want %d", len(got), rerr, len(data))
		}
	})
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
