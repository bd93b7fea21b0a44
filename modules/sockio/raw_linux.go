package sockio

import (
	"net"
	"os"
	"syscall"
	"unsafe"
)

const (
	supported = true
	rawWritev = true
)

// iovec is writev(2)'s vector element.
type iovec = syscall.Iovec

// read and write are read(2) and write(2) on a non-blocking socket, which
// never block: syscall.RawSyscall leaves the runtime's scheduler out.
func read(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

func write(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

// writev is writev(2) on a non-blocking socket, which never blocks.
func writev(fd uintptr, iov []syscall.Iovec) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	return int(n), errno
}

// writevRaw is WriteBuffers with raw writev(2).
func (s *IO) writevRaw(bufs *net.Buffers) (int64, error) {
	var total int64
	var errno syscall.Errno
	err := s.rc.Write(func(fd uintptr) bool {
		defer func() { clear(s.iov) }() // no buffer stays reachable from here
		for len(*bufs) > 0 {
			s.iov = iovecs(s.iov[:0], *bufs)
			if len(s.iov) == 0 { // only empty buffers left
				*bufs = nil
				return true
			}
			m, e := writev(fd, s.iov)
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return false // wait for room
			case e != 0:
				errno = e
				return true
			}
			total += int64(m)
			consume(bufs, m)
		}
		return true
	})
	switch {
	case err != nil:
		return total, s.opError("writev", err)
	case errno != 0:
		return total, s.opError("writev", os.NewSyscallError("writev", errno))
	}
	return total, nil
}

// maxIovecs bounds one writev's vector, well under every kernel's IOV_MAX
// (1024 on Linux).
const maxIovecs = 64

// iovecs appends the non-empty buffers of bufs (up to maxIovecs) to iov.
func iovecs(iov []syscall.Iovec, bufs net.Buffers) []syscall.Iovec {
	for _, b := range bufs {
		if len(iov) == maxIovecs {
			break
		}
		if len(b) == 0 {
			continue
		}
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	return iov
}
