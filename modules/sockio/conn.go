package sockio

import (
	"errors"
	"net"
)

// Conn is a socket whose Read and Write go through an IO: for a
// connection read and written by layers that take any net.Conn (TLS, an
// HTTP transport, the tunnel's), such as an agent's tunnel connection,
// whose every hop starts with a read or a write of it. Everything else is
// the socket's own.
type Conn struct {
	net.Conn
	raw *IO
}

// Wrap returns c as a Conn, or c itself when New cannot handle it.
func Wrap(c net.Conn) net.Conn {
	raw := New(c)
	if raw == nil {
		return c
	}
	return &Conn{Conn: c, raw: raw}
}

// Read reads as net.Conn's Read does, with raw system calls.
func (c *Conn) Read(p []byte) (int, error) { return c.raw.Read(p) }

// Write writes as net.Conn's Write does, with raw system calls.
func (c *Conn) Write(p []byte) (int, error) { return c.raw.Write(p) }

// CloseWrite half-closes the socket.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn returns the socket.
func (c *Conn) NetConn() net.Conn { return c.Conn }
