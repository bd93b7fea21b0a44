package forward

import (
	"errors"
	"syscall"
)

// wsaeconnrefused is Windows' "connection refused" (WSAECONNREFUSED).
const wsaeconnrefused syscall.Errno = 10061

func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, wsaeconnrefused)
}
