//go:build !unix

package sockio

import (
	"net"
	"syscall"
)

const (
	supported = false
	rawWritev = false
)

// iovec is unused here: WriteBuffers writes buffer by buffer.
type iovec struct{}

func read(uintptr, []byte) (int, syscall.Errno)  { panic("sockio: no socket system calls here") }
func write(uintptr, []byte) (int, syscall.Errno) { panic("sockio: no socket system calls here") }

func (s *IO) writevRaw(*net.Buffers) (int64, error) { panic("sockio: no raw writev here") }
