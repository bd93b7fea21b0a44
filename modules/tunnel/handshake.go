package tunnel

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ClientHandshake opens a session from the agent's side: it sends a
// Handshake with name, key (the gateway's token) and ProtocolVersion, and
// waits for the cloud's Ack. A refusal returns a *RefusedError carrying the
// cloud's reason. ctx bounds the exchange; with the WebSocket adapter, a ctx
// that ends mid-exchange also closes the connection.
func ClientHandshake(ctx context.Context, conn Conn, name, key string) error {
	return ClientHandshakeVersion(ctx, conn, name, key, ProtocolVersion)
}

// ClientHandshakeVersion is ClientHandshake announcing an older version,
// for a cloud that refused ProtocolVersion (IsVersionRefusal).
func ClientHandshakeVersion(ctx context.Context, conn Conn, name, key string, version uint16) error {
	b, err := Encode(Handshake{Name: name, Key: key, Version: version})
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if err := conn.WriteMessage(ctx, b); err != nil {
		return fmt.Errorf("handshake: send: %w", err)
	}
	b, err = conn.ReadMessage(ctx)
	if err != nil {
		return fmt.Errorf("handshake: read answer: %w", err)
	}
	msg, err := Decode(b)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	ack, ok := msg.(Ack)
	if !ok || !ack.GUID.IsZero() {
		return fmt.Errorf("handshake: %w: answered with %v", ErrProtocol, msg.Type())
	}
	if !ack.Ok {
		return &RefusedError{Reason: ack.Message}
	}
	return nil
}

// ReasonAuthFailed is what the agent reads when authenticate fails with an
// error that is not a *RefusedError: internal errors stay in the cloud.

// ServerHandshake answers an agent's handshake on the cloud's side: it reads
// the Handshake, checks the version, calls authenticate with the name and
// key, and sends the Ack. It returns the Handshake (its Key is the secret
// token: do not log it) once accepted.
//
// When authenticate fails the agent is refused with a reason: the Reason of
// a *RefusedError in the error chain, else a generic "authentication failed"
// (the error itself may hold internal details). The returned error wraps
// both ErrRefused and authenticate's error.
func ServerHandshake(ctx context.Context, conn Conn, authenticate func(ctx context.Context, name, key string) error) (Handshake, error) {
	b, err := conn.ReadMessage(ctx)
	if err != nil {
		return Handshake{}, fmt.Errorf("handshake: read: %w", err)
	}
	msg, err := Decode(b)
	if err != nil {
		refuse(ctx, conn, ReasonMalformedHandshake)
		return Handshake{}, fmt.Errorf("handshake: %w", err)
	}
	h, ok := msg.(Handshake)
	if !ok {
		refuse(ctx, conn, ReasonExpectedHandshake)
		return Handshake{}, fmt.Errorf("handshake: %w: got %v first", ErrProtocol, msg.Type())
	}
	if h.Version < MinProtocolVersion || h.Version > ProtocolVersion {
		// Version 1 clouds said "(server speaks 1)"; the prefix is what
		// an agent matches on.
		reason := fmt.Sprintf("%s %d (server speaks %d to %d)", ReasonUnsupportedVersion, h.Version, MinProtocolVersion, ProtocolVersion)
		refuse(ctx, conn, reason)
		return h, fmt.Errorf("handshake: %w", &RefusedError{Reason: reason})
	}
	if err := authenticate(ctx, h.Name, h.Key); err != nil {
		reason := ReasonAuthFailed
		var re *RefusedError
		if errors.As(err, &re) && re.Reason != "" {
			reason = re.Reason
		}
		refuse(ctx, conn, reason)
		if errors.Is(err, ErrRefused) {
			return h, fmt.Errorf("handshake: %w", err)
		}
		return h, fmt.Errorf("handshake: %w: %w", ErrRefused, err)
	}
	b, err = Encode(Ack{Ok: true})
	if err != nil {
		return h, fmt.Errorf("handshake: %w", err)
	}
	if err := conn.WriteMessage(ctx, b); err != nil {
		return h, fmt.Errorf("handshake: send ack: %w", err)
	}
	return h, nil
}

// IsVersionRefusal reports whether err is a cloud's refusal of the
// handshake's protocol version (clouds of every version word it so).
func IsVersionRefusal(err error) bool {
	var re *RefusedError
	return errors.As(err, &re) && strings.HasPrefix(re.Reason, ReasonUnsupportedVersion)
}

// refuse sends a refusal Ack, best effort: the connection is closed next.
func refuse(ctx context.Context, conn Conn, reason string) {
	if b, err := Encode(Ack{Ok: false, Message: reason}); err == nil {
		_ = conn.WriteMessage(ctx, b)
	}
}
