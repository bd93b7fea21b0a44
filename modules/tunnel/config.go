package tunnel

import (
	"fmt"
	"time"
)

// Config tunes a Session. The zero value of every field means its default,
// so Config{} is a valid configuration; DefaultConfig shows the values.
// The JSON names are those of the cloud's Caddy config (the `tunnel`
// section of the gatehouse app embeds this struct).
type Config struct {
	// StreamWindow is the receive window of each stream: how many bytes the
	// peer may send before the application reads them, so the most memory
	// one stream can hold. A Window update is sent once half of it has been
	// read. Default DefaultWindow (256 KiB); MinWindow to MaxWindow.
	StreamWindow uint32 `json:"stream_window,omitempty"`

	// MaxStreamWindow is how far a stream's receive window may grow when
	// its reader keeps up and the sender is held back only by credit (a
	// bulk transfer over a path whose round trip, not the reader, is the
	// limit). A stalled reader never grows its window, so the memory a
	// slow reader can pin stays StreamWindow. Default 4 MiB; at least
	// StreamWindow, at most MaxWindow; equal to StreamWindow disables growth.
	MaxStreamWindow uint32 `json:"max_stream_window,omitempty"`

	// MaxStreams bounds the streams open at once on the session, both
	// directions together. Initiators above it are refused with an Ack, and
	// Open fails with ErrTooManyStreams. Default 4096.
	MaxStreams int `json:"max_streams,omitempty"`

	// AcceptBacklog bounds the incoming streams waiting for Accept. An
	// Initiator that finds the backlog full is refused. Default 256.
	AcceptBacklog int `json:"accept_backlog,omitempty"`

	// KeepAliveInterval is how often the session pings the peer. Default 10s.
	KeepAliveInterval time.Duration `json:"keepalive_interval,omitempty"`

	// KeepAliveTimeout is how long the session waits without receiving
	// anything from the peer before it closes with ErrKeepAliveTimeout. It
	// must exceed KeepAliveInterval, since an idle peer is only heard from by
	// its pings and pongs. Default 30s.
	KeepAliveTimeout time.Duration `json:"keepalive_timeout,omitempty"`

	// WriteTimeout bounds the writing of one frame to the transport; a
	// transport that accepts nothing for that long closes the session with
	// ErrWriteTimeout. It is checked at each keepalive tick. Default 30s.
	WriteTimeout time.Duration `json:"write_timeout,omitempty"`

	// HandshakeTimeout bounds ClientHandshake and ServerHandshake when the
	// caller (hub.ServeTunnel, client.Client) applies it. Default 10s.
	HandshakeTimeout time.Duration `json:"handshake_timeout,omitempty"`
}

// DefaultConfig returns the configuration that zero fields stand for.
func DefaultConfig() Config {
	return Config{
		StreamWindow:      DefaultWindow,
		MaxStreamWindow:   DefaultMaxWindow,
		MaxStreams:        4096,
		AcceptBacklog:     256,
		KeepAliveInterval: 10 * time.Second,
		KeepAliveTimeout:  30 * time.Second,
		WriteTimeout:      30 * time.Second,
		HandshakeTimeout:  10 * time.Second,
	}
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.StreamWindow == 0 {
		c.StreamWindow = d.StreamWindow
	}
	if c.MaxStreamWindow == 0 {
		c.MaxStreamWindow = max(d.MaxStreamWindow, c.StreamWindow)
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = d.MaxStreams
	}
	if c.AcceptBacklog == 0 {
		c.AcceptBacklog = d.AcceptBacklog
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = d.KeepAliveInterval
	}
	if c.KeepAliveTimeout == 0 {
		c.KeepAliveTimeout = max(d.KeepAliveTimeout, 3*c.KeepAliveInterval)
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	return c
}

// VerifyConfig reports whether c (with zero fields taken as defaults) is
// usable. Its errors wrap ErrInvalidConfig.
func VerifyConfig(c Config) error {
	c = c.WithDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.StreamWindow < MinWindow || c.StreamWindow > MaxWindow:
		return bad("stream window %d outside [%d, %d]", c.StreamWindow, MinWindow, MaxWindow)
	case c.MaxStreamWindow < c.StreamWindow || c.MaxStreamWindow > MaxWindow:
		return bad("max stream window %d outside [%d, %d]", c.MaxStreamWindow, c.StreamWindow, MaxWindow)
	case c.MaxStreams < 0:
		return bad("max streams %d is negative", c.MaxStreams)
	case c.AcceptBacklog < 0:
		return bad("accept backlog %d is negative", c.AcceptBacklog)
	case c.KeepAliveInterval < 0, c.KeepAliveTimeout < 0, c.WriteTimeout < 0, c.HandshakeTimeout < 0:
		return bad("negative duration")
	case c.KeepAliveTimeout <= c.KeepAliveInterval:
		return bad("keepalive timeout %v must exceed the interval %v", c.KeepAliveTimeout, c.KeepAliveInterval)
	}
	return nil
}
