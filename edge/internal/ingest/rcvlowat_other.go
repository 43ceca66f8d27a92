//go:build !unix

package ingest

import "errors"

var errNoRcvLowat = errors.New("SO_RCVLOWAT is not supported here")

func setRcvLowat(uintptr, int) error { return errNoRcvLowat }

func readQueued(uintptr, []byte) (int, error, bool) { return 0, errNoRcvLowat, false }
