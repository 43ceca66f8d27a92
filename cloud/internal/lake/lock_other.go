//go:build !unix

package lake

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir opens the lock file without locking it: platforms without flock
// rely on the deployment running one writer per lake directory.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "_writer.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	return f, nil
}
