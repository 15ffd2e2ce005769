//go:build e2e && linux

package e2e

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel SIGKILL the child when the test binary
// dies (a panic on -timeout skips every t.Cleanup), so no esd outlives
// its test holding a port and a data directory.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
