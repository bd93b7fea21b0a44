//go:build !windows

package forward

import "syscall"

var errAddrInUse error = syscall.EADDRINUSE
