package service

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// agentHoldsStore says whether a running agent has dir's store open: bbolt
// holds an exclusive flock on agent.db while it is open.
func agentHoldsStore(dir string) error {
	f, err := os.Open(filepath.Join(dir, "agent.db"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("an agent is running with its data in %s (stop it first): %w", dir, err)
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
