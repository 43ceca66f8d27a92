//go:build !linux

package buffer

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

func dropCache(*os.File, int64, int64) {}
