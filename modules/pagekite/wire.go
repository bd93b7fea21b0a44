package pagekite

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Errors of the wire parsers. They are named so that callers and tests can
// tell a malformed peer from a broken connection.
var (
	ErrHeaderTooLarge = errors.New("pagekite: request head too large")
	ErrBadRequest     = errors.New("pagekite: malformed request")
	ErrBadChunk       = errors.New("pagekite: malformed chunk")
	ErrChunkTooLarge  = errors.New("pagekite: chunk too large")
	ErrZChunks        = errors.New("pagekite: compressed chunk, but ZChunks was not offered")
	ErrTunnelClosed   = errors.New("pagekite: kite closed the tunnel")
)

// Header is an ordered list of header fields. PageKite repeats names
// (one X-PageKite per kite, one X-PageKite-Features per feature), so a map
// of single values would lose data.
type Header []Field

// Field is one "Name: value" line.
type Field struct{ Name, Value string }

// Values returns every value of name (case-insensitive), in order.
func (h Header) Values(name string) []string {
	var out []string
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// Get returns the first value of name, or "".
func (h Header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Has reports whether name is present.
func (h Header) Has(name string) bool {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// parseFields parses header lines (without the blank line that ends them).
// PageKite writes "Name: value"; it splits on the first colon and trims,
// so we do too. A line without a colon is an error rather than ignored,
// since nothing legitimate sends one.
func parseFields(block string) (Header, error) {
	var h Header
	for line := range strings.SplitSeq(block, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%w: header line %.40q", ErrBadRequest, line)
		}
		h = append(h, Field{Name: name, Value: strings.TrimSpace(value)})
	}
	return h, nil
}

// Request is a kite's request head: the request line and its headers.
type Request struct {
	Method, Target, Proto string
	Header                Header
}

// ReadRequest reads one request head (up to the blank line) of at most
// max bytes from r. It reads no further than the head, so that what
// follows (nothing, for the requests a kite sends) stays in r.
func ReadRequest(r *bufio.Reader, max int) (*Request, error) {
	var head []byte
	for {
		line, err := r.ReadSlice('\n')
		head = append(head, line...)
		if len(head) > max {
			return nil, ErrHeaderTooLarge
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(head) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("pagekite: reading request head: %w", err)
		}
		if bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n")) {
			break
		}
	}
	return ParseRequest(head)
}

// ParseRequest parses a complete request head.
func ParseRequest(head []byte) (*Request, error) {
	first, rest, _ := strings.Cut(string(head), "\n")
	first = strings.TrimSuffix(first, "\r")
	parts := strings.Split(first, " ")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || !strings.HasPrefix(parts[2], "HTTP/") {
		return nil, fmt.Errorf("%w: request line %.60q", ErrBadRequest, first)
	}
	h, err := parseFields(rest)
	if err != nil {
		return nil, err
	}
	return &Request{Method: parts[0], Target: parts[1], Proto: parts[2], Header: h}, nil
}

// KiteRequest is one X-PageKite header: a kite asking for a name.
type KiteRequest struct {
	Proto, Domain, SRand, FEToken, Sign string
}

// ID is "proto:domain:srand", the form results are reported in.
func (k KiteRequest) ID() string { return k.Proto + ":" + k.Domain + ":" + k.SRand }

// Payload is what the kite signed.
func (k KiteRequest) Payload() string {
	return k.Proto + ":" + k.Domain + ":" + k.SRand + ":" + k.FEToken
}

// ParseKiteRequest parses "proto:domain:srand:fetoken:sign". Proto and
// domain are lowercased, as the original frontend does, for lookups; the
// signature is checked against the kite's own spelling (Payload keeps it).
func ParseKiteRequest(v string) (KiteRequest, error) {
	p := strings.Split(strings.TrimSpace(v), ":")
	if len(p) != 5 || p[0] == "" || p[1] == "" || p[2] == "" || p[4] == "" {
		return KiteRequest{}, fmt.Errorf("%w: X-PageKite %.80q", ErrBadRequest, v)
	}
	for _, s := range p {
		if strings.ContainsAny(s, " \t;,") {
			return KiteRequest{}, fmt.Errorf("%w: X-PageKite %.80q", ErrBadRequest, v)
		}
	}
	return KiteRequest{Proto: p[0], Domain: p[1], SRand: p[2], FEToken: p[3], Sign: p[4]}, nil
}

// Chunk is one decoded tunnel chunk: its header fields and its data.
type Chunk struct {
	Header Header
	Data   []byte
}

// ReadChunkSize reads one "<hex length>\r\n" line. Length 0 is how a peer
// says goodbye (ErrTunnelClosed); a "Z" or "R" in the size line is a
// compressed chunk, which we never offered.
func ReadChunkSize(r *bufio.Reader, max int) (int, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, fmt.Errorf("%w: size line too long", ErrBadChunk)
		}
		return 0, err
	}
	return parseChunkSize(line, max)
}

func parseChunkSize(line []byte, max int) (int, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	if strings.Contains(s, "Z") || strings.HasSuffix(s, "R") {
		return 0, ErrZChunks
	}
	if s == "" || len(s) > 8 {
		return 0, fmt.Errorf("%w: size %.20q", ErrBadChunk, s)
	}
	n, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: size %.20q", ErrBadChunk, s)
	}
	if n == 0 {
		return 0, ErrTunnelClosed
	}
	if n > uint64(max) {
		return 0, fmt.Errorf("%w: %d bytes", ErrChunkTooLarge, n)
	}
	return int(n), nil
}

// ParseChunk splits a chunk payload into its header lines and its data at
// the first blank line. The data aliases payload.
func ParseChunk(payload []byte) (Chunk, error) {
	i := bytes.Index(payload, []byte("\r\n\r\n"))
	if i < 0 {
		return Chunk{}, fmt.Errorf("%w: no blank line after the chunk headers", ErrBadChunk)
	}
	h, err := parseFields(string(payload[:i]))
	if err != nil {
		return Chunk{}, fmt.Errorf("%w: %w", ErrBadChunk, err)
	}
	return Chunk{Header: h, Data: payload[i+4:]}, nil
}

// AppendChunk appends one chunk framing headers and data to dst.
func AppendChunk(dst []byte, headers []Field, data []byte) []byte {
	// ParseChunk ends the headers at the first blank line, so a chunk with
	// no header lines must still carry an empty line before the blank one.
	if len(headers) == 0 {
		dst = strconv.AppendUint(dst, uint64(4+len(data)), 16)
		dst = append(dst, "\r\n\r\n\r\n"...)
		return append(dst, data...)
	}
	n := 2 + len(data)
	for _, f := range headers {
		n += len(f.Name) + 2 + len(f.Value) + 2
	}
	dst = strconv.AppendUint(dst, uint64(n), 16)
	dst = append(dst, '\r', '\n')
	for _, f := range headers {
		dst = append(dst, f.Name...)
		dst = append(dst, ':', ' ')
		dst = append(dst, f.Value...)
		dst = append(dst, '\r', '\n')
	}
	dst = append(dst, '\r', '\n')
	return append(dst, data...)
}
