package buffer

import "github.com/prometheus/client_golang/prometheus"

// metrics are the buffer's Prometheus series. They exist (unregistered) when
// Open gets a nil registerer, so the code never checks.
type metrics struct {
	commits       prometheus.Counter
	commitSeconds prometheus.Histogram
	dropped       *prometheus.CounterVec
	summarised    *prometheus.CounterVec
	duplicates    prometheus.Counter
	reclaimed     prometheus.Counter
	vlogCollected prometheus.Counter
	written       prometheus.Counter
	all           []prometheus.Collector
}

func newMetrics(b *Buffer) *metrics {
	const ns, sub = "updraft", "edge_buffer"
	m := &metrics{
		commits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "commits_total",
			Help: "Badger transactions committed with fsync (group commits, seals, drops)."}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "commit_seconds",
			Help: "Time to commit and fsync one transaction.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dropped_readings_total",
			Help: "Readings deleted before they were forwarded, by reason (max_bytes, max_age, corrupt)."}, []string{"reason"}),
		summarised: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "summarised_readings_total",
			Help: "Readings replaced by per-minute summaries (policy downsample), by reason."}, []string{"reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "duplicate_messages_total",
			Help: "Redelivered MQTT messages recognised as already durable and not stored again."}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "segments_reclaimed_total",
			Help: "Segments whose disk space was given back with DropPrefix."}),
		vlogCollected: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "value_log_files_collected_total",
			Help: "Value-log files deleted by the value-log GC once their entries were dropped."}),
		written: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "written_bytes_total",
			Help: "Key and value bytes committed to Badger (before its write amplification)."}),
	}
	for _, r := range []string{ReasonMaxBytes, ReasonMaxAge, ReasonCorrupt} {
		m.dropped.WithLabelValues(r)
		m.summarised.WithLabelValues(r)
	}
	gauge := func(name, help string, f func(s *Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help},
			func() float64 { s := b.Stats(); return f(&s) })
	}
	m.all = []prometheus.Collector{m.commits, m.commitSeconds, m.dropped, m.summarised, m.duplicates, m.reclaimed, m.vlogCollected, m.written,
		gauge("readings", "Readings durable and not yet acknowledged by JetStream.",
			func(s *Stats) float64 { return float64(s.BufferedReadings) }),
		gauge("batches", "Sealed batches not yet acknowledged.", func(s *Stats) float64 { return float64(s.UnackedBatches) }),
		gauge("dead_letters", "Dead letters not yet forwarded.", func(s *Stats) float64 { return float64(s.DeadLetters) }),
		gauge("events", "Events not yet forwarded.", func(s *Stats) float64 { return float64(s.Events) }),
		gauge("bytes", "Encoded size of buffered data, what max_bytes limits.", func(s *Stats) float64 { return float64(s.BufferedBytes) }),
		gauge("max_bytes", "The max_bytes setting.", func(s *Stats) float64 { return float64(s.MaxBytes) }),
		gauge("disk_bytes", "Disk space of the buffer directory.", func(s *Stats) float64 { return float64(s.DiskBytes) }),
		gauge("oldest_unsent_age_seconds", "Age of the oldest buffered reading, by arrival; 0 when empty.",
			func(s *Stats) float64 {
				if s.OldestUnsent.IsZero() {
					return 0
				}
				return max(b.now().Sub(s.OldestUnsent).Seconds(), 0)
			}),
		gauge("queued_readings", "Readings of MQTT messages received and not yet durable.",
			func(s *Stats) float64 { return float64(s.QueuedReadings) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "intake_waits_total",
			Help: "MQTT messages whose intake waited because 16,384 readings were not yet durable (the broker holds the rest)."},
			func() float64 { return float64(b.Stats().IntakeWaits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "journal_checkpoints_total",
			Help: "Checkpoints of the journal: Badger's logs synced and the journal emptied."},
			func() float64 { return float64(b.jr.checkpoints.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "journal_written_bytes_total",
			Help: "Bytes of records appended to the journal."},
			func() float64 { return float64(b.jr.bytes.Load()) }),
		gauge("blocked", "1 while appends wait for space (policy block).", func(s *Stats) float64 {
			if s.Blocked {
				return 1
			}
			return 0
		}),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for i, c := range m.all {
		if err := reg.Register(c); err != nil {
			for _, done := range m.all[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	for _, c := range m.all {
		reg.Unregister(c)
	}
}
