package tunnel

import (
	"errors"
	"fmt"
)

// Frame layout
//
// Every WebSocket message (always binary) is one frame:
//
//	+-----------+---------------------------------------------+
//	| type byte | msgpack map with string keys (the payload)  |
//	+-----------+---------------------------------------------+
//
// The payload keys are the Go field names of the message types in
// messages.go ("Name", "Key", "GUID", ...); schema.go lists them, in the
// order they are written, with their presence and bounds. Strings are msgpack str, byte fields
// (GUID, Data) are msgpack bin, numbers are non-negative msgpack integers in
// any width. A GUID is always bin of exactly 16 bytes; the all-zero GUID is
// reserved and means "the session itself" (in an Ack).
//
// A Data frame is encoded by hand on the hot path, with exactly the bytes a
// generic msgpack encoder would produce:
//
//	0x03 0x82 0xa4 "GUID" 0xc4 0x10 <16 bytes> 0xa4 "Data" <bin8|bin16 header> <payload>
//
// so its overhead is at most DataOverhead bytes.

// MessageType is the first byte of every frame.
type MessageType byte

// Message types. The values are part of the protocol.
const (
	// TypeHandshake opens a session: the agent's name, token and protocol version.
	TypeHandshake MessageType = 0x01
	// TypeInitiator opens a stream: its GUID, where it goes and where it comes from.
	TypeInitiator MessageType = 0x02
	// TypeData carries stream bytes.
	TypeData MessageType = 0x03
	// TypeTerminator ends a stream, fully or in one direction (Half).
	TypeTerminator MessageType = 0x04
	// TypeWindow grants the peer more send credit on a stream.
	TypeWindow MessageType = 0x05
	// TypePing asks the peer for a Pong with the same nonce (keepalive, RTT).
	TypePing MessageType = 0x06
	// TypePong answers a Ping.
	TypePong MessageType = 0x07
	// TypeAck answers a Handshake or an Initiator, or (with the zero GUID and
	// Ok false) tells the peer why the session is being closed.
	TypeAck MessageType = 0xFF
)

// String names the type for errors and logs.
func (t MessageType) String() string {
	switch t {
	case TypeHandshake:
		return "Handshake"
	case TypeInitiator:
		return "Initiator"
	case TypeData:
		return "Data"
	case TypeTerminator:
		return "Terminator"
	case TypeWindow:
		return "Window"
	case TypePing:
		return "Ping"
	case TypePong:
		return "Pong"
	case TypeAck:
		return "Ack"
	}
	return fmt.Sprintf("MessageType(%#02x)", byte(t))
}

// Protocol versions and limits. They are constants rather than
// configuration because both ends must agree on them and the handshake
// negotiates only the version.
const (
	// ProtocolVersion is the version this package speaks in Handshake.
	ProtocolVersion = 3
	// MinProtocolVersion is the oldest version ServerHandshake accepts:
	// agents already deployed speak it.
	MinProtocolVersion = 1
	// VersionSource is the first version whose peers read
	// Initiator.Source. To an older peer, Session.Open sends a forwarded
	// stream's source gateway in Gatename instead, as version 1 did.
	VersionSource = 2
	// VersionEarlyData is the first version whose peers take early data:
	// up to MaxEarlyData bytes of Data right behind an Initiator, before
	// the Ack (Session.OpenEarly). The cloud sends the visitor's
	// ClientHello that way, saving a round trip through the tunnel on
	// every new connection.
	VersionEarlyData = 3
	// MaxEarlyData bounds early data: MinWindow, so that it fits any
	// window the receiver may state in its Ack.
	MaxEarlyData = MinWindow

	// MaxFrameSize bounds every frame, type byte included. A peer that sends
	// more is disconnected (the WebSocket read limit is set to it).
	MaxFrameSize = 64 << 10

	// DataOverhead is the largest number of bytes a Data frame adds around its
	// payload.
	DataOverhead = 1 + 1 + 5 + 2 + guidLen + 5 + 3

	// MaxDataSize is the largest payload of one Data frame. Writes larger than
	// this are split.
	MaxDataSize = MaxFrameSize - DataOverhead

	// DefaultWindow is the receive window of a stream when the Initiator or
	// Ack that opened it does not state one.
	DefaultWindow = 256 << 10
	// DefaultMaxWindow is how far a stream's window grows by default when
	// its reader keeps up (see Config.MaxStreamWindow).
	DefaultMaxWindow = 4 << 20
	// MinWindow and MaxWindow bound the receive window a side may advertise
	// and any single Window credit.
	MinWindow = 16 << 10
	MaxWindow = 16 << 20

	// Field bounds enforced by Decode and Encode.

	// MaxNameLen bounds a gateway name (Handshake.Name, Initiator.Gatename
	// and Source): a DNS name.
	MaxNameLen = 253
	// MaxKeyLen bounds Handshake.Key, the gateway's token.
	MaxKeyLen = 1024
	// MaxAddrLen bounds Initiator.Ip and ClientAddr: a textual IPv6
	// address with zone and port fits.
	MaxAddrLen = 64
	// MaxReasonLen bounds Ack.Message, the reason of a refusal; longer
	// reasons are cut.
	MaxReasonLen = 1024
)

// Reasons the tunnel package itself sends in refusing Acks. Peers match on
// them, so they are part of the protocol; refusals by the application
// (Stream.Ack) carry its own reasons.
const (
	// ReasonMalformedHandshake: the first frame did not decode.
	ReasonMalformedHandshake = "malformed handshake"
	// ReasonExpectedHandshake: the first frame was another message.
	ReasonExpectedHandshake = "expected a handshake"
	// ReasonUnsupportedVersion starts the refusal of a handshake whose
	// version is outside [MinProtocolVersion, ProtocolVersion]; the
	// versions follow.
	ReasonUnsupportedVersion = "unsupported protocol version"
	// ReasonAuthFailed: authenticate failed without a reason of its own.
	ReasonAuthFailed = "authentication failed"
	// ReasonDuplicateStream: an Initiator reused the GUID of an open stream.
	ReasonDuplicateStream = "duplicate stream GUID"
	// ReasonTooManyStreams starts the refusal of an Initiator above
	// Config.MaxStreams; the limit follows.
	ReasonTooManyStreams = "too many streams"
	// ReasonBacklogFull: the Initiator found Config.AcceptBacklog full.
	ReasonBacklogFull = "accept backlog full"
	// ReasonStreamClosed: the application closed an accepted stream before
	// answering it.
	ReasonStreamClosed = "stream closed"
	// ReasonStreamClosedByPeer: Open's answer when the peer withdrew the
	// stream with a Terminator instead of an Ack.
	ReasonStreamClosedByPeer = "stream closed by peer"
)

// Path is where the cloud serves the agents' WebSocket, below its API URL.
const Path = "/v1/tunnel"

// Reasons the cloud and the agents send each other as session goodbyes
// (Session.CloseWithReason) and stream refusals, beyond the tunnel's own.
const (
	// ReasonReplaced: a newer session for the same name took over.
	ReasonReplaced = "replaced by a newer session"
	// ReasonCloudShutdown: the cloud is stopping.
	ReasonCloudShutdown = "cloud shutting down"
	// ReasonAgentShutdown: the agent is stopping.
	ReasonAgentShutdown = "agent shutting down"

	// Refusals of a forwarded stream by the cloud, to the source agent.

	// ReasonForwardDenied: no forwarding rule allows it.
	ReasonForwardDenied = "denied by the cloud's forwarding rules"
	// ReasonForwardUnknownGateway: the target is not registered.
	ReasonForwardUnknownGateway = "unknown gateway"
	// ReasonForwardOffline starts the refusal when the target has no live
	// tunnel or did not answer.
	ReasonForwardOffline = "target gateway offline"
	// ReasonForwardBadRequest: the Initiator names no gateway or port.
	ReasonForwardBadRequest = "initiator names no gateway or port"
)

// RefusedBy is how the cloud passes the target agent's refusal of a
// forwarded stream on to the source: "refused by GATEWAY: REASON".
func RefusedBy(gateway, reason string) string {
	return "refused by " + gateway + ": " + reason
}

// Sentinel errors. Errors returned by this package wrap one of them, so
// callers branch with errors.Is.
var (
	// ErrSessionClosed: the session is closed, locally or because the peer or
	// the transport went away. The error wraps the cause.
	ErrSessionClosed = errors.New("session closed")
	// ErrClosedByPeer: the peer closed the session and said why.
	ErrClosedByPeer = errors.New("session closed by peer")
	// ErrStreamClosed: the stream was closed locally, or written after CloseWrite.
	ErrStreamClosed = errors.New("stream closed")
	// ErrStreamReset: the peer closed the stream entirely, so writes fail.
	ErrStreamReset = errors.New("stream closed by peer")
	// ErrRefused: the peer refused a handshake or a stream (see RefusedError).
	ErrRefused = errors.New("refused")
	// ErrTooManyStreams: opening a stream would exceed Config.MaxStreams.
	ErrTooManyStreams = errors.New("too many streams")
	// ErrNotAcked: Read or Write on an accepted stream before Ack(true, ...).
	ErrNotAcked = errors.New("stream not acknowledged")
	// ErrAlreadyAcked: Ack called twice, or on a stream this side opened.
	ErrAlreadyAcked = errors.New("stream already acknowledged")
	// ErrKeepAliveTimeout: nothing came from the peer for KeepAliveTimeout.
	ErrKeepAliveTimeout = errors.New("keepalive timeout")
	// ErrWriteTimeout: one frame took longer than WriteTimeout to write.
	ErrWriteTimeout = errors.New("write timeout")
	// ErrProtocol: the peer broke the protocol (bad frame, credit exceeded,
	// unexpected message). The session is closed.
	ErrProtocol = errors.New("protocol violation")
	// ErrFrameTooLarge: a frame exceeds MaxFrameSize.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrInvalidConfig: VerifyConfig rejected a Config.
	ErrInvalidConfig = errors.New("invalid config")
)

// RefusedError is the peer's refusal of a handshake or a stream, with the
// reason it sent in its Ack. It matches ErrRefused with errors.Is.
//
// An authenticate callback of ServerHandshake may also return one to choose
// the reason the agent sees.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string {
	if e.Reason == "" {
		return ErrRefused.Error()
	}
	return ErrRefused.Error() + ": " + e.Reason
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }
