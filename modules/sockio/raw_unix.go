//go:build unix && !linux

package sockio

import (
	"net"
	"syscall"
)

const (
	supported = true
	rawWritev = false
)

// iovec is unused here: WriteBuffers writes buffer by buffer.
type iovec struct{}

// read and write go through the syscall package here, as the net package's
// do: the runtime's bookkeeping stays, the rest of IO works the same.
func read(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errno(err)
}

func write(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errno(err)
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}

func (s *IO) writevRaw(*net.Buffers) (int64, error) { panic("sockio: no raw writev here") }
