package tunnel

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
)

const guidLen = 16

// GUID identifies a stream within a session. It is 16 random bytes chosen by
// the side that opens the stream (so both sides open streams without
// coordinating), sent as msgpack bin of length 16. The zero GUID is reserved
// for session-level Acks.
type GUID [guidLen]byte

// NewGUID returns a random GUID, never the zero one.
func NewGUID() GUID {
	var g GUID
	for g.IsZero() {
		// crypto/rand.Read never fails since Go 1.24.
		_, _ = rand.Read(g[:])
	}
	return g
}

// IsZero reports whether g is the reserved zero GUID.
func (g GUID) IsZero() bool { return g == GUID{} }

// String returns g in hex, for logs.
func (g GUID) String() string { return hex.EncodeToString(g[:]) }

// Message is one of the protocol messages: Handshake, Initiator, Data,
// Terminator, Window, Ping, Pong or Ack. How each travels is its entry in
// the schema table (schema.go); what values it may hold is its validate
// method, which Encode and Decode both apply.
type Message interface {
	Type() MessageType
	validate() error
}

// Handshake is the first frame an agent sends; the cloud answers with an Ack.
type Handshake struct {
	// Name is the gateway's name.
	Name string
	// Key is the gateway's token. It is a secret: never log it.
	Key string
	// Version is the protocol version the agent speaks (ProtocolVersion),
	// from MinProtocolVersion on.
	Version uint16
}

// Initiator opens a stream. The receiver answers with an Ack carrying the
// same GUID. Meta is its typed form (MetaFromInitiator, Meta.Initiator).
type Initiator struct {
	// GUID names the new stream. Session.Open fills it.
	GUID GUID
	// Ip and Port are the destination the stream is for, when it has one
	// (agent-to-agent forwarding); empty and zero for ingress TLS.
	Ip   string
	Port uint16
	// Gatename is the gateway the stream is for. (Version 1 agents were
	// sent the source gateway here on a forward's target leg; see
	// VersionSource and Session.Open.)
	Gatename string
	// ClientAddr is the address (ip:port) of the original client, for
	// PROXY protocol headers and logs; empty when unknown.
	ClientAddr string
	// Window is the opener's receive window for this stream, that is the
	// acceptor's initial send credit; 0 means DefaultWindow. Session.Open
	// fills it from Config.StreamWindow.
	Window uint32
	// Source is the gateway that opened a forwarded stream, filled by the
	// cloud on the target leg; empty for ingress, and never trusted from
	// an agent.
	Source string
}

// Data carries stream bytes. It consumes as much send credit as len(Data).
type Data struct {
	GUID GUID
	Data []byte
}

// Terminator ends a stream. With Half set it means "no more data from me"
// (the receiver reads EOF after the data already sent, and may keep writing);
// without it, the sender also stops reading, so the receiver's writes fail.
type Terminator struct {
	GUID GUID
	Half bool
}

// Window grants the peer Credit more bytes of Data on the stream. A receiver
// sends it once the application has consumed half of its window.
type Window struct {
	GUID   GUID
	Credit uint32
}

// Ping asks for a Pong with the same Nonce. Each side pings every
// KeepAliveInterval, measures the round trip from the matching Pong, and
// treats KeepAliveTimeout without any frame from the peer as a dead peer.
type Ping struct {
	Nonce uint64
}

// Pong answers a Ping with its Nonce.
type Pong struct {
	Nonce uint64
}

// Ack answers a Handshake (zero GUID) or an Initiator (its GUID). With the
// zero GUID after the handshake, Ok false means the sender is closing the
// session and Message says why.
type Ack struct {
	Ok      bool
	Message string
	GUID    GUID
	// Window is the acceptor's receive window for the stream (the opener's
	// initial send credit); 0 means DefaultWindow.
	Window uint32
}

func (Handshake) Type() MessageType  { return TypeHandshake }
func (Initiator) Type() MessageType  { return TypeInitiator }
func (Data) Type() MessageType       { return TypeData }
func (Terminator) Type() MessageType { return TypeTerminator }
func (Window) Type() MessageType     { return TypeWindow }
func (Ping) Type() MessageType       { return TypePing }
func (Pong) Type() MessageType       { return TypePong }
func (Ack) Type() MessageType        { return TypeAck }

var errInvalid = fmt.Errorf("%w: invalid message", ErrProtocol)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

func (m Handshake) validate() error {
	if m.Name == "" || len(m.Name) > MaxNameLen {
		return invalid("handshake name must have 1 to %d bytes", MaxNameLen)
	}
	if m.Key == "" || len(m.Key) > MaxKeyLen {
		return invalid("handshake key must have 1 to %d bytes", MaxKeyLen)
	}
	if m.Version == 0 {
		return invalid("handshake version 0")
	}
	return nil
}

func (m Initiator) validate() error {
	if err := m.validateBounds(); err != nil {
		return err
	}
	return m.validateAddrs()
}

// validateBounds is validate without parsing the addresses: enough for an
// Initiator whose addresses were formatted from typed ones (Meta.initiator).
func (m Initiator) validateBounds() error {
	if m.GUID.IsZero() {
		return invalid("initiator with zero GUID")
	}
	if len(m.Ip) > MaxAddrLen {
		return invalid("initiator ip too long")
	}
	if len(m.Gatename) > MaxNameLen {
		return invalid("initiator gatename too long")
	}
	if len(m.Source) > MaxNameLen {
		return invalid("initiator source too long")
	}
	if len(m.ClientAddr) > MaxAddrLen {
		return invalid("initiator client address too long")
	}
	return validWindow(m.Window)
}

// validateAddrs checks that Ip and ClientAddr, when set, parse.
func (m Initiator) validateAddrs() error {
	if m.Ip != "" {
		if _, err := netip.ParseAddr(m.Ip); err != nil {
			return invalid("initiator ip: %v", err)
		}
	}
	if m.ClientAddr != "" {
		if _, err := netip.ParseAddrPort(m.ClientAddr); err != nil {
			return invalid("initiator client address: %v", err)
		}
	}
	return nil
}

func validWindow(w uint32) error {
	if w != 0 && (w < MinWindow || w > MaxWindow) {
		return invalid("window %d outside [%d, %d]", w, MinWindow, MaxWindow)
	}
	return nil
}

func (m Data) validate() error {
	if m.GUID.IsZero() {
		return invalid("data with zero GUID")
	}
	if len(m.Data) == 0 || len(m.Data) > MaxDataSize {
		return invalid("data payload must have 1 to %d bytes", MaxDataSize)
	}
	return nil
}

func (m Terminator) validate() error {
	if m.GUID.IsZero() {
		return invalid("terminator with zero GUID")
	}
	return nil
}

func (m Window) validate() error {
	if m.GUID.IsZero() {
		return invalid("window with zero GUID")
	}
	if m.Credit == 0 || m.Credit > MaxWindow {
		return invalid("window credit must be 1 to %d", MaxWindow)
	}
	return nil
}

func (Ping) validate() error { return nil }
func (Pong) validate() error { return nil }

func (m Ack) validate() error {
	if len(m.Message) > MaxReasonLen {
		return invalid("ack message longer than %d bytes", MaxReasonLen)
	}
	if m.GUID.IsZero() && m.Window != 0 {
		return invalid("session ack with a window")
	}
	return validWindow(m.Window)
}
