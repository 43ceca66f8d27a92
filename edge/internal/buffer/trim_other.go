//go:build !linux

package buffer

import "errors"

// trimMappings is Linux-only; elsewhere the kernel's own policy applies.
func trimMappings(string) (int64, error) { return 0, nil }

// residentFileBytes is Linux-only too.
func residentFileBytes() (int64, error) { return 0, errors.ErrUnsupported }
