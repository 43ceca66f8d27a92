package lake

import "errors"

var (
	// ErrLocked: another process holds the lake directory's writer lock.
	ErrLocked = errors.New("lake directory is locked by another writer")
	// ErrClosed: the writer has been closed.
	ErrClosed = errors.New("lake writer is closed")
	// ErrMissingFile: a manifest names a data file that exists neither under
	// its final nor under its temporary name, so committed data was lost
	// outside Updraft (deleted or a disk fault).
	ErrMissingFile = errors.New("committed data file is missing")
)
