package ingress

import (
	"io"
	"net"
	"time"
)

// TLS alert descriptions (RFC 8446, section 6) the router sends.
const (
	// alertUnrecognizedName: the cloud serves no site under this name
	// (no SNI, a name below an offline gateway, an offline gateway when
	// the offline page is off).
	alertUnrecognizedName = 112
	// alertInternalError: the gateway exists and is online but cannot
	// take this connection now (refused, no answer, over a limit), or the
	// ClientHello was too large to read its name.
	alertInternalError = 80
)

// Bounds of the goodbye to a refused TLS client.
const (
	alertWriteTimeout = time.Second
	// lingerTimeout and lingerBytes bound the read that drains the client
	// after the alert: closing a socket with unread input sends a reset,
	// which can destroy the alert before the client reads it.
	lingerTimeout = time.Second
	lingerBytes   = 64 << 10
)

// sendAlert writes a fatal TLS alert in a plaintext record, as a server
// does before its ServerHello, half-closes, drains what the client still
// sends (bounded), and closes c. The client's TLS stack reports the alert
// ("remote error: tls: unrecognized name") instead of a reset connection.
func sendAlert(c net.Conn, desc byte) {
	defer c.Close()
	// Record version 3.3 as TLS 1.3 writes every record after the
	// ClientHello; level 2 is fatal.
	rec := []byte{21, 3, 3, 0, 2, 2, desc}
	_ = c.SetWriteDeadline(time.Now().Add(alertWriteTimeout))
	if _, err := c.Write(rec); err != nil {
		return
	}
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, c, lingerBytes)
}
