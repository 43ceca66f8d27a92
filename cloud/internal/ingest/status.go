package ingest

import "time"

// Status is what GET /api/v1/status reports.
type Status struct {
	Region            string     `json:"region"`
	Ready             bool       `json:"ready"`
	State             string     `json:"state"`
	RowsCommitted     int64      `json:"rows_committed"`
	BatchesCommitted  int64      `json:"batches_committed"`
	Commits           int64      `json:"commits"`
	Files             int64      `json:"files"`
	DuplicatesSkipped int64      `json:"duplicates_skipped"`
	Rejected          int64      `json:"rejected"`
	LastCommit        *time.Time `json:"last_commit"`
	PendingRows       int        `json:"pending_rows"`
	PendingBatches    int        `json:"pending_batches"`
	// E2ELatency summarises commit time minus reading time over the most
	// recent 100,000 committed readings.
	E2ELatency Latency `json:"latency_ms"`
}

// Status reports the lake totals (since the lake was created) and this
// process's counters (since it started). Safe from any goroutine.
func (in *Ingester) Status() Status {
	t := in.w.Totals()
	s := Status{
		Region: in.cfg.Region, RowsCommitted: t.Rows, BatchesCommitted: t.Batches, Commits: t.Commits, Files: t.Files,
		DuplicatesSkipped: in.duplicates.Load(), Rejected: in.rejected.Load(),
		PendingRows: t.PendingRows, PendingBatches: t.PendingBatches, E2ELatency: in.lat.summary(),
	}
	if !t.LastCommit.IsZero() {
		lc := t.LastCommit
		s.LastCommit = &lc
	}
	if err := in.Ready(); err != nil {
		s.State = err.Error()
	} else {
		s.Ready, s.State = true, "consuming"
	}
	return s
}
