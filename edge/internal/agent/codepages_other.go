//go:build !linux

package agent

// releaseCode is Linux-only; elsewhere the kernel's own policy applies.
func releaseCode() (int64, error) { return 0, nil }
