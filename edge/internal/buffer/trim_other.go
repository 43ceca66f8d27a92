//go:build !linux

package buffer

import "errors"

// trimMappings is Linux-only; elsewhere the kernel's own policy applies.
func trimMappings(string) (int64, error) { return 0, nil }

// residentFiles is Linux-only too.
type residentFiles struct{}

func openResidentFiles() (*residentFiles, error) { return nil, errors.ErrUnsupported }
func (*residentFiles) bytes() (int64, error)     { return 0, errors.ErrUnsupported }
func (*residentFiles) close()                    {}
