package batch

import "time"

// WriteStream lets the tests compare the long-lived writers with a writer of
// a record's own.
var WriteStream = writeStream

// IdleStreamWriters is how many writers are kept for the next batches.
func IdleStreamWriters() int {
	streams.Lock()
	defer streams.Unlock()
	return len(streams.idle)
}

// SetIdleWriterTTL changes how long an unused writer is kept, and returns a
// function that restores it.
func SetIdleWriterTTL(d time.Duration) func() {
	streams.Lock()
	defer streams.Unlock()
	old := idleWriterTTL
	idleWriterTTL = d
	if streams.sweep != nil {
		streams.sweep.Reset(d)
	}
	return func() {
		streams.Lock()
		defer streams.Unlock()
		idleWriterTTL = old
	}
}

// DropIdleStreamWriters lets go of every kept writer.
func DropIdleStreamWriters() {
	streams.Lock()
	defer streams.Unlock()
	for _, s := range streams.idle {
		s.close()
	}
	streams.idle = nil
}
