package buffer

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync makes a preallocated file's written data durable without its
// timestamps.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// dropCache drops the file's clean pages from the page cache.
func dropCache(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}
