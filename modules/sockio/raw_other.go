//go:build !unix

package sockio

import "syscall"

const supported = false

func read(uintptr, []byte) (int, syscall.Errno)  { panic("sockio: no socket system calls here") }
func write(uintptr, []byte) (int, syscall.Errno) { panic("sockio: no socket system calls here") }
