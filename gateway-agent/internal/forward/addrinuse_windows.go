package forward

import "syscall"

// errAddrInUse is Windows' WSAEADDRINUSE.
var errAddrInUse error = syscall.Errno(10048)
