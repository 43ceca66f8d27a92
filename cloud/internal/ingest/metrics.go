package ingest

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/updraft-io/updraft/schemas/batch"
)

type metrics struct {
	rows, batches, files, commits prometheus.Counter
	duplicates                    prometheus.Counter
	rejected                      *prometheus.CounterVec
	flush                         prometheus.Histogram
	e2e                           prometheus.Histogram
}

// Reasons a message is rejected, the label values of updraft_cloud_rejected_total.
var rejectReasons = []string{"header", "payload", "schema", "mismatch", "reading", "too_large", "kind", "aggregate", "other"}

func reasonOf(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{batch.ErrHeader, "header"}, {batch.ErrPayload, "payload"}, {batch.ErrSchema, "schema"},
		{batch.ErrMismatch, "mismatch"}, {batch.ErrReading, "reading"}, {batch.ErrTooLarge, "too_large"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

func newMetrics(reg prometheus.Registerer, pending func() float64) *metrics {
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_cloud_rows_committed_total", Help: "Readings committed to the lake."}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_cloud_batches_committed_total", Help: "Batches committed to the lake."}),
		files: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_cloud_files_committed_total", Help: "Parquet files committed to the lake."}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_cloud_commits_total", Help: "Lake commits (flushes)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "updraft_cloud_duplicates_skipped_total", Help: "Batches delivered again after they were committed or buffered, acknowledged without adding rows."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "updraft_cloud_rejected_total", Help: "Messages that failed to decode, quarantined under _rejected/, by reason."}, []string{"reason"}),
		flush: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "updraft_cloud_flush_duration_seconds", Help: "Time to write, commit and publish one flush.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		e2e: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "updraft_cloud_e2e_latency_seconds", Help: "Commit time minus reading time, per reading.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16)}),
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.rows, m.batches, m.files, m.commits, m.duplicates, m.rejected, m.flush, m.e2e,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "updraft_cloud_pending_rows", Help: "Readings buffered for the next flush."}, pending))
	}
	return m
}
