package query

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
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

// benchLakeEnv names a folder to keep the benchmark lake in between runs
// (written there if it has none), so runs, and builds, query the same files.
const benchLakeEnv = "UPDRAFT_BENCH_LAKE"

// TestMain removes the benchmark lake, which benchmarks share, unless it is
// kept in $UPDRAFT_BENCH_LAKE.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" && os.Getenv(benchLakeEnv) == "" {
		os.RemoveAll(benchDir)
		os.RemoveAll(benchDir + "-pageindex")
	}
	os.Exit(code)
}

// benchLake writes the day once per process, one commit per hour as the
// writer does under a steady load.
func benchLake(b *testing.B) string {
	benchOnce.Do(func() {
		if benchDir = os.Getenv(benchLakeEnv); benchDir != "" {
			if rows, ok := keptLake(benchDir); ok {
				benchRows = rows
				return
			}
			benchErr = os.MkdirAll(benchDir, 0o755)
		} else {
			benchDir, benchErr = os.MkdirTemp("", "updraft-query-bench-")
		}
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
		benchErr = os.WriteFile(filepath.Join(benchDir, benchRowsFile), []byte(strconv.FormatInt(benchRows, 10)), 0o644)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDir
}

// benchRowsFile records, in a kept lake, how many rows it holds; it is
// written last, so a lake without it is incomplete.
const benchRowsFile = "_bench_rows"

func keptLake(dir string) (int64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, benchRowsFile))
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// BenchmarkQueryDeviceDay asks for one device and metric over the whole day,
// again and again on one Engine, as a server does: file footers are parsed
// once and kept.
func BenchmarkQueryDeviceDay(b *testing.B) {
	e := New(benchLake(b))
	benchDeviceDay(b, func() *Engine { return e })
}

// BenchmarkQueryDeviceDayCold asks the same of a new Engine each time: the
// first query after opening, which parses every footer it needs. The
// operating system's page cache stays warm; disk reads are not measured.
func BenchmarkQueryDeviceDayCold(b *testing.B) {
	dir := benchLake(b)
	benchDeviceDay(b, func() *Engine { return New(dir) })
}

// BenchmarkQueryDeviceDayPageIndex asks the same (on one Engine) of the day
// rewritten with the lake writer's settings plus 64 KiB data pages and page
// indexes, to measure what those writer options would save a query: the
// reader then decompresses only the pages of ts and value that hold the
// series instead of whole column chunks.
func BenchmarkQueryDeviceDayPageIndex(b *testing.B) {
	e := New(pageIndexLake(b))
	benchDeviceDay(b, func() *Engine { return e })
}

var (
	pageIndexOnce sync.Once
	pageIndexDir  string
	pageIndexErr  error
)

// pageIndexLake copies the benchmark lake's raw files once, rewritten with
// page indexes and smaller pages.
func pageIndexLake(b *testing.B) string {
	src := benchLake(b)
	pageIndexOnce.Do(func() {
		pageIndexDir = src + "-pageindex"
		if _, err := os.Stat(filepath.Join(pageIndexDir, benchRowsFile)); err == nil {
			return
		}
		props := parquet.NewWriterProperties(
			parquet.WithCompression(compress.Codecs.Zstd),
			parquet.WithStats(true),
			parquet.WithDictionaryDefault(true),
			parquet.WithDictionaryFor(lakefmt.ColTS, false),
			parquet.WithDictionaryFor(lakefmt.ColValue, false),
			parquet.WithMaxRowGroupLength(int64(lake.DefaultConfig().RowGroupRows)),
			parquet.WithDataPageSize(64<<10),
			parquet.WithPageIndexEnabled(true),
		)
		pageIndexErr = filepath.WalkDir(filepath.Join(src, lakefmt.RawDir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !lakefmt.IsDataFile(d.Name()) {
				return err
			}
			rel, err := filepath.Rel(src, path)
			if err != nil {
				return err
			}
			return rewriteParquet(path, filepath.Join(pageIndexDir, rel), props)
		})
		if pageIndexErr == nil {
			pageIndexErr = os.WriteFile(filepath.Join(pageIndexDir, benchRowsFile), []byte(strconv.FormatInt(benchRows, 10)), 0o644)
		}
	})
	if pageIndexErr != nil {
		b.Fatal(pageIndexErr)
	}
	return pageIndexDir
}

func rewriteParquet(from, to string, props *parquet.WriterProperties) error {
	pf, err := file.OpenParquetFile(from, false)
	if err != nil {
		return err
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 64 << 10}, memory.DefaultAllocator)
	if err != nil {
		return err
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		return err
	}
	defer tbl.Release()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	f, err := os.Create(to)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := pqarrow.NewFileWriter(tbl.Schema(), f, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return err
	}
	if err := w.WriteTable(tbl, props.MaxRowGroupLength()); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func benchDeviceDay(b *testing.B, engine func() *Engine) {
	req := Request{Device: "dev-123", Metric: "rh", From: benchDay, To: benchDay.Add(24 * time.Hour)}
	// The first query, outside the timing, leaves a kept Engine warm.
	if _, err := engine().Query(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	var res *Result
	for b.Loop() {
		var err error
		if res, err = engine().Query(context.Background(), req); err != nil {
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
