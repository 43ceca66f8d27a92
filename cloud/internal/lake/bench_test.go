package lake

import (
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/updraft-io/updraft/cloud/internal/natstest"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// Workload of the writer benchmarks: as the cloud scenario of
// docs/performance.md, 100 devices x 3 metrics, one reading per second, in
// batches of benchPerBatch readings; benchPerFlush batches per commit.
const (
	benchPerBatch = natstest.WorkloadPerBatch
	benchPerFlush = 100
)

// benchBatch is batch seq of the workload, encoded as an edge sends it.
func benchBatch(b *testing.B, rng *rand.Rand, start time.Time, seq uint64) *batch.Message {
	return natstest.WorkloadBatch(b, rng, edge1, start, seq)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWriter measures the lake writer alone: decoded batches in,
// committed Parquet files out. Run it on one core (-cpu 1) for a per-core
// figure.
func BenchmarkWriter(b *testing.B) {
	c := DefaultConfig()
	c.Dir = b.TempDir()
	w := mustOpen(b, c)
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Hour)
	rng := rand.New(rand.NewPCG(1, 2))
	batches := make([]*batch.Columns, benchPerFlush)
	for i := range batches {
		m := benchBatch(b, rng, start, uint64(i))
		cols, err := batch.DecodeColumns(m.Subject, m.Header, m.Data)
		if err != nil {
			b.Fatal(err)
		}
		batches[i] = cols
	}
	seq := uint64(0)
	c0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		for _, bt := range batches {
			seq++
			cp := *bt
			cp.ID.Seq = seq
			w.AddColumns(&cp, time.Now())
		}
		if _, err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchPerBatch*benchPerFlush)/b.Elapsed().Seconds(), "readings/s")
	// CPU time of the whole process: on a shared machine it moves less than
	// wall time.
	b.ReportMetric(float64(b.N*benchPerBatch*benchPerFlush)/(cpuTime()-c0).Seconds(), "readings/cpu-s")
	var size int64
	filepath.WalkDir(filepath.Join(c.Dir, lakefmt.RawDir), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	b.ReportMetric(float64(size)/float64(b.N*benchPerBatch*benchPerFlush), "bytes/reading")
}
