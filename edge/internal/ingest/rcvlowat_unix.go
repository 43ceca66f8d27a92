//go:build unix

package ingest

import "golang.org/x/sys/unix"

func setRcvLowat(fd uintptr, n int) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, n)
}

// readQueued reads from a non-blocking socket; empty reports that nothing
// was queued.
func readQueued(fd uintptr, p []byte) (n int, err error, empty bool) {
	for {
		n, err = unix.Read(int(fd), p)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EAGAIN {
		return 0, nil, true
	}
	return max(n, 0), err, false
}
