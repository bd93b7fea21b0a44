// Package clienthello reads the ClientHello that opens a TLS connection to
// learn which server name (SNI) and application protocols (ALPN) the client
// asks for, without consuming it: Peek hands back a net.Conn that replays the
// bytes it read, so the connection can go on, untouched, to a TLS server or
// down a gateway's tunnel.
//
// It only parses. It does not terminate TLS, does not judge whether the rest
// of the handshake is sound, and never writes to the connection: whoever
// receives the connection next does the real handshake and its checks. The
// parser is strict about structure (lengths, duplicate extensions, several
// host names) so that the name it reports is the one a TLS server would see.
//
// It knows nothing of Caddy; the listener wrapper is a thin adapter over it.
package clienthello

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// Errors that callers branch on.
var (
	// ErrNotTLS means the connection does not start with a TLS handshake
	// record (plain HTTP, SSH, SSLv2, ...). The replay connection still
	// holds what was read, so it can be handed to another protocol.
	ErrNotTLS = errors.New("clienthello: not a tls handshake")
	// ErrMalformed means the bytes look like TLS but do not hold a valid
	// ClientHello.
	ErrMalformed = errors.New("clienthello: malformed client hello")
	// ErrTooLarge means the ClientHello does not fit in the size limit.
	ErrTooLarge = errors.New("clienthello: client hello exceeds size limit")
	// ErrTruncated means the input ended before the ClientHello did.
	ErrTruncated = errors.New("clienthello: truncated client hello")
)

// Info is what a ClientHello tells about the connection.
type Info struct {
	// ServerName is the SNI host name, lower-cased (DNS names are case
	// insensitive and routing keys must not be); empty when the client sent
	// none, as clients do when they dial an IP address.
	ServerName string
	// ALPN lists the application protocols offered, in the client's order
	// of preference; nil when the extension is absent.
	ALPN []string
}

// Wire constants (RFC 8446 §5.1, §4, §4.2; RFC 6066 §3; RFC 7301).
const (
	recordHeaderLen          = 5
	recordTypeHandshake      = 0x16
	handshakeHeaderLen       = 4
	typeClientHello          = 1
	maxPlaintext             = 1 << 14 // largest record fragment a peer may send
	extServerName            = 0
	extALPN                  = 16
	sniHostName              = 0
	maxSessionIDLen          = 32
	clientRandomLen          = 32
	tlsMajorVersion     byte = 3
)

// Parse parses the ClientHello at the start of data, the bytes of TLS
// records as they arrive on the wire. The ClientHello may span several
// records; bytes after it are ignored. It returns ErrTruncated when data ends
// too early, ErrNotTLS or ErrMalformed otherwise. Parse does not retain data.
func Parse(data []byte) (*Info, error) {
	var a assembler
	msg, need, err := a.feed(data)
	if err != nil {
		return nil, err
	}
	if msg == nil {
		return nil, fmt.Errorf("%w: have %d bytes, need at least %d", ErrTruncated, len(data), need)
	}
	return parseClientHello(msg)
}

// assembler gathers the handshake message carried by a run of TLS records.
// It is incremental so that a client dribbling one byte at a time costs
// linear, not quadratic, work: each call resumes after the last whole record.
type assembler struct {
	off int    // bytes of the input already consumed as whole records
	msg []byte // handshake bytes gathered so far, when they span records
}

// feed examines data, everything read so far (each call with the previous
// data as a prefix). It returns the ClientHello body once complete, or the
// smallest total length of data that could let it progress.
func (a *assembler) feed(data []byte) (hello []byte, need int, err error) {
	if len(data) == 0 {
		return nil, 1, nil
	}
	// The first bytes decide whether this is TLS at all; anything else is
	// another protocol, not a broken handshake.
	if data[0] != recordTypeHandshake || (len(data) > 1 && data[1] != tlsMajorVersion) {
		return nil, 0, ErrNotTLS
	}
	for {
		if len(data)-a.off < recordHeaderLen {
			return nil, a.off + recordHeaderLen + a.missing(), nil
		}
		h := data[a.off : a.off+recordHeaderLen]
		if h[0] != recordTypeHandshake {
			return nil, 0, fmt.Errorf("%w: record type %d before the end of the client hello", ErrMalformed, h[0])
		}
		if h[1] != tlsMajorVersion {
			return nil, 0, fmt.Errorf("%w: record version %d.%d", ErrMalformed, h[1], h[2])
		}
		n := int(h[3])<<8 | int(h[4])
		// RFC 8446 §5.1 forbids empty handshake fragments; refusing them
		// also keeps a client from sending headers forever for nothing.
		if n == 0 || n > maxPlaintext {
			return nil, 0, fmt.Errorf("%w: record length %d", ErrMalformed, n)
		}
		end := a.off + recordHeaderLen + n
		if len(data) < end {
			// What this record cannot hold needs at least one more.
			if rest := a.missing() - n; rest > 0 {
				return nil, end + recordHeaderLen + rest, nil
			}
			return nil, end, nil
		}
		frag := data[a.off+recordHeaderLen : end]
		a.off = end
		if a.msg == nil && len(frag) >= handshakeHeaderLen {
			// Common case: the whole message is in the first record, so
			// no copy is needed.
			if m, ok, err := message(frag); err != nil || ok {
				return m, 0, err
			}
		}
		a.msg = append(a.msg, frag...)
		m, ok, err := message(a.msg)
		if err != nil || ok {
			return m, 0, err
		}
	}
}

// missing returns how many handshake bytes are still expected after those
// gathered, when the handshake header has been seen; 0 otherwise.
func (a *assembler) missing() int {
	if len(a.msg) < handshakeHeaderLen {
		return 0
	}
	n := int(a.msg[1])<<16 | int(a.msg[2])<<8 | int(a.msg[3])
	return handshakeHeaderLen + n - len(a.msg)
}

// message returns the ClientHello body in b, a run of handshake bytes,
// reporting ok=false when b does not hold all of it yet.
func message(b []byte) (body []byte, ok bool, err error) {
	if len(b) < handshakeHeaderLen {
		return nil, false, nil
	}
	if b[0] != typeClientHello {
		return nil, false, fmt.Errorf("%w: handshake message type %d", ErrMalformed, b[0])
	}
	n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if len(b) < handshakeHeaderLen+n {
		return nil, false, nil
	}
	return b[handshakeHeaderLen : handshakeHeaderLen+n], true, nil
}

// parseClientHello parses the body of a ClientHello handshake message
// (RFC 8446 §4.1.2, which keeps the TLS 1.2 layout).
func parseClientHello(msg []byte) (*Info, error) {
	s := cryptobyte.String(msg)
	var (
		version                              uint16
		sessionID, suites, compression, exts cryptobyte.String
	)
	if !s.ReadUint16(&version) || !s.Skip(clientRandomLen) ||
		!s.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > maxSessionIDLen ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites) < 2 || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&compression) || len(compression) < 1 {
		return nil, fmt.Errorf("%w: bad fixed fields", ErrMalformed)
	}
	if version>>8 != uint16(tlsMajorVersion) {
		return nil, fmt.Errorf("%w: client version %#04x", ErrMalformed, version)
	}
	info := &Info{}
	if s.Empty() {
		return info, nil // extensions are optional before TLS 1.3
	}
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return nil, fmt.Errorf("%w: bad extensions block", ErrMalformed)
	}
	var seenBuf [32]uint16
	seen := seenBuf[:0]
	for !exts.Empty() {
		var (
			typ  uint16
			data cryptobyte.String
		)
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, fmt.Errorf("%w: bad extension", ErrMalformed)
		}
		seen = append(seen, typ)
		var err error
		switch typ {
		case extServerName:
			info.ServerName, err = parseServerName(data)
		case extALPN:
			info.ALPN, err = parseALPN(data)
		}
		if err != nil {
			return nil, err
		}
	}
	// RFC 8446 §4.2: an extension appears at most once. A second SNI could
	// otherwise route the connection by one name while the TLS server
	// answers for the other.
	slices.Sort(seen)
	for i := 1; i < len(seen); i++ {
		if seen[i] == seen[i-1] {
			return nil, fmt.Errorf("%w: duplicate extension %d", ErrMalformed, seen[i])
		}
	}
	return info, nil
}

// parseServerName parses the server_name extension (RFC 6066 §3).
func parseServerName(data cryptobyte.String) (string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return "", fmt.Errorf("%w: bad server_name extension", ErrMalformed)
	}
	var host []byte
	for !list.Empty() {
		var (
			nameType uint8
			name     cryptobyte.String
		)
		if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) || len(name) == 0 {
			return "", fmt.Errorf("%w: bad server name entry", ErrMalformed)
		}
		if nameType != sniHostName {
			continue // other name types may be defined one day; skip them
		}
		if host != nil {
			return "", fmt.Errorf("%w: several host names", ErrMalformed)
		}
		host = name
	}
	if host == nil {
		return "", nil
	}
	// RFC 6066: "The hostname is represented ... without a trailing dot";
	// crypto/tls refuses one too, so the next hop would fail anyway.
	if host[len(host)-1] == '.' {
		return "", fmt.Errorf("%w: server name with a trailing dot", ErrMalformed)
	}
	return lowerASCII(host), nil
}

// parseALPN parses the application_layer_protocol_negotiation extension
// (RFC 7301 §3.1).
func parseALPN(data cryptobyte.String) ([]string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return nil, fmt.Errorf("%w: bad alpn extension", ErrMalformed)
	}
	var protos []string
	for !list.Empty() {
		var proto cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&proto) || proto.Empty() {
			return nil, fmt.Errorf("%w: bad alpn protocol", ErrMalformed)
		}
		protos = append(protos, string(proto))
	}
	return protos, nil
}

// lowerASCII lower-cases the ASCII letters of b and leaves other bytes alone:
// host names in SNI are ASCII (A-labels), and Unicode case folding could map
// two different byte strings to one routing key.
func lowerASCII(b []byte) string {
	if !slices.ContainsFunc(b, isUpper) {
		return string(b)
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if isUpper(c) {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return string(out)
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
