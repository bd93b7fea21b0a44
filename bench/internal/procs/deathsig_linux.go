package procs

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill cmd when the benchmark driver dies
// without running StopAll (a panic, SIGPIPE from `| head`, kill -9), so
// no cloud or agent outlives it holding ports, CPU or the bench lock.
// (The signal follows the thread that started cmd; Go keeps its threads
// for the life of the process.)
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
