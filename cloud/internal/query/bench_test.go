package query

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// A day of 200 devices x 2 metrics every 3s: 11.52 million readings.
const (
	benchDevices  = 200
	benchInterval = 3 * time.Second
)

var benchDay = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)

var (
	benchOnce sync.Once
	benchDir  string
	benchRows int64
	benchErr  error
)

// TestMain removes the benchmark lake, which benchmarks share.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// benchLake writes the day once per process, one commit per hour as the
// writer does under a steady load.
func benchLake(b *testing.B) string {
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "updraft-query-bench-")
		if benchErr != nil {
			return
		}
		c := lake.DefaultConfig()
		c.Dir, c.RollRows = benchDir, lake.MaxRollRows
		w, err := lake.Open(c, nil)
		if err != nil {
			benchErr = err
			return
		}
		defer w.Close()
		seq := uint64(0)
		edge := schemas.EdgeID{Region: "eu", Site: "plant", Edge: "gw"}
		for h := benchDay; h.Before(benchDay.Add(24 * time.Hour)); h = h.Add(time.Hour) {
			for ts := h; ts.Before(h.Add(time.Hour)); ts = ts.Add(10 * time.Minute) {
				seq++
				bt := &batch.Batch{ID: batch.ID{Edge: edge, Epoch: 1, Seq: seq}, Kind: schemas.KindRaw}
				for t := ts; t.Before(ts.Add(10 * time.Minute)); t = t.Add(benchInterval) {
					for d := range benchDevices {
						for m, metric := range []string{"temp", "rh"} {
							bt.Readings = append(bt.Readings, schemas.Reading{Region: "eu", Site: "plant", Edge: "gw",
								Device: fmt.Sprintf("dev-%03d", d), Metric: metric, TS: t.UnixNano(),
								Value: float64(t.Unix()%1000) + float64(d) + float64(m)/2, Unit: "C"})
						}
					}
				}
				w.Add(bt, time.Now())
			}
			if _, err := w.Flush(); err != nil {
				benchErr = err
				return
			}
		}
		benchRows = w.Totals().Rows
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDir
}

// BenchmarkQueryDeviceDay asks for one device and metric over the whole day.
func BenchmarkQueryDeviceDay(b *testing.B) {
	e := New(benchLake(b))
	req := Request{Device: "dev-123", Metric: "rh", From: benchDay, To: benchDay.Add(24 * time.Hour)}
	var res *Result
	for b.Loop() {
		var err error
		if res, err = e.Query(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	want := int(24 * time.Hour / benchInterval)
	if len(res.Points) != want {
		b.Fatalf("%d points, want %d", len(res.Points), want)
	}
	b.ReportMetric(float64(benchRows), "lake_rows")
	b.ReportMetric(float64(res.FilesRead), "files")
	b.ReportMetric(float64(res.RowGroupsRead), "row_groups")
	b.ReportMetric(float64(res.RowsScanned), "rows_scanned")
	b.ReportMetric(float64(res.BytesRead), "bytes_read")
}
