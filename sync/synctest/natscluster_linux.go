package synctest

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill a node when the process that started
// it dies without its cleanup (a test binary killed by a timeout or a
// closed pipe), so no broker outlives its test.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
