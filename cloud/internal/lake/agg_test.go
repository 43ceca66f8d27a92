package lake

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// pqAggRow is an aggregate lake row as parquet-go reads it.
type pqAggRow struct {
	TS     time.Time `parquet:"ts,timestamp(nanosecond)"`
	Window string    `parquet:"window"`
	Region string    `parquet:"region"`
	Site   string    `parquet:"site"`
	Edge   string    `parquet:"edge"`
	Device string    `parquet:"device"`
	Metric string    `parquet:"metric"`
	Count  *int64    `parquet:"count,optional"`
	Min    *float64  `parquet:"min,optional"`
	Max    *float64  `parquet:"max,optional"`
	Sum    *float64  `parquet:"sum,optional"`
	Mean   *float64  `parquet:"mean,optional"`
	Last   *float64  `parquet:"last,optional"`
	Stddev *float64  `parquet:"stddev,optional"`
	P50    *float64  `parquet:"p50,optional"`
	P90    *float64  `parquet:"p90,optional"`
	P99    *float64  `parquet:"p99,optional"`
	Unit   *string   `parquet:"unit,optional"`
}

// makeAggBatch returns an aggregate batch of edge: for each of devices
// devices and each 1m window starting at start, count, min, max and mean of
// "temp" (and, when full, every other statistic).
func makeAggBatch(edge schemas.EdgeID, seq uint64, start time.Time, windows, devices int, full bool) *batch.Batch {
	b := &batch.Batch{ID: batch.ID{Edge: edge, Epoch: 7, Seq: seq}, Kind: schemas.KindAgg}
	stats := []string{"count", "min", "max", "mean"}
	if full {
		stats = AggStats
	}
	for w := range windows {
		ts := start.Add(time.Duration(w) * time.Minute).UnixNano()
		for d := range devices {
			for s, stat := range stats {
				r := schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge,
					Device: fmt.Sprintf("dev-%d", d), Metric: "temp:" + stat + ":1m", TS: ts,
					Value: float64(seq*1000+uint64(w*10+d)) + float64(s)/8, Unit: "C"}
				if stat == "count" {
					r.Value, r.Unit = float64(60+w), ""
				}
				b.Readings = append(b.Readings, r)
			}
		}
	}
	b.MinTS, b.MaxTS = b.Readings[0].TS, b.Readings[len(b.Readings)-1].TS
	return b
}

func TestParseAggName(t *testing.T) {
	for _, tc := range []struct {
		name, metric, window string
		stat                 int
		bad                  bool
	}{
		{name: "temp:mean:1m", metric: "temp", stat: 4, window: "1m"},
		{name: "temp:count:10s", metric: "temp", stat: 0, window: "10s"},
		{name: "a:b:p99:1h", metric: "a:b", stat: 9, window: "1h"},
		{name: "temp", bad: true},
		{name: "temp:mean", bad: true},
		{name: ":mean:1m", bad: true},
		{name: "temp:median:1m", bad: true},
		{name: "temp:mean:0s", bad: true},
		{name: "temp:mean:soon", bad: true},
	} {
		m, s, w, err := ParseAggName(tc.name)
		if tc.bad {
			if !errors.Is(err, ErrAggName) {
				t.Errorf("ParseAggName(%q) = %v, want ErrAggName", tc.name, err)
			}
			continue
		}
		if err != nil || m != tc.metric || s != tc.stat || w != tc.window {
			t.Errorf("ParseAggName(%q) = %q %d %q %v", tc.name, m, s, w, err)
		}
	}
}

func FuzzParseAggName(f *testing.F) {
	for _, s := range []string{"temp:mean:1m", "a:b:count:10s", "x::", ":::", "t:p50:1h30m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, stat, w, err := ParseAggName(s)
		if err != nil {
			return
		}
		if m+":"+AggStats[stat]+":"+w != s {
			t.Fatalf("ParseAggName(%q) = %q %d %q does not round-trip", s, m, stat, w)
		}
	})
}

func TestValidateAgg(t *testing.T) {
	b := makeAggBatch(edge1, 1, t0, 1, 1, false)
	if err := ValidateAgg(b); err != nil {
		t.Fatal(err)
	}
	b.Readings[0].Value = 1.5 // count
	if err := ValidateAgg(b); !errors.Is(err, ErrAggName) {
		t.Errorf("fractional count: %v", err)
	}
	b = makeAggBatch(edge1, 1, t0, 1, 1, false)
	b.Readings[2].Metric = "temp"
	if err := ValidateAgg(b); !errors.Is(err, ErrAggName) || !strings.Contains(err.Error(), "reading 2") {
		t.Errorf("plain metric: %v", err)
	}
}

// TestAggBatchesWrittenAsWideRows writes raw and aggregate batches in one
// flush and reads the aggregate files back with parquet-go.
func TestAggBatchesWrittenAsWideRows(t *testing.T) {
	c := testConfig(t)
	w := mustOpen(t, c)
	start := time.Date(2025, 3, 4, 5, 58, 0, 0, time.UTC) // windows cross 06:00
	partial := makeAggBatch(edge1, 1, start, 4, 3, false)
	full := makeAggBatch(edge1, 2, start.Add(4*time.Minute), 2, 3, true)
	raw := makeBatch(edge1, 1, 1, t0, 50)
	for _, b := range []*batch.Batch{partial, full, raw} {
		if got := w.Add(b, time.Now()); got != Added {
			t.Fatalf("Add = %v", got)
		}
	}
	cm, err := w.Flush()
	if err != nil {
		t.Fatal(err)
	}
	// 4 windows x 3 devices + 2 x 3 wide rows, plus 50 raw rows.
	if cm.Rows != 12+6+50 {
		t.Errorf("commit rows = %d, want 68", cm.Rows)
	}
	var aggFiles []string
	if err := filepath.WalkDir(filepath.Join(c.Dir, AggDir), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && lakefmt.IsDataFile(d.Name()) {
			rel, _ := filepath.Rel(c.Dir, p)
			aggFiles = append(aggFiles, filepath.ToSlash(rel))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(aggFiles)
	if len(aggFiles) != 2 || !strings.HasPrefix(aggFiles[0], "agg/region=local/date=2025-03-04/hour=05/") ||
		!strings.HasPrefix(aggFiles[1], "agg/region=local/date=2025-03-04/hour=06/") {
		t.Fatalf("aggregate files = %v, want one in hour 05 and one in hour 06", aggFiles)
	}
	var rows []pqAggRow
	for _, f := range aggFiles {
		rs, err := pq.ReadFile[pqAggRow](filepath.Join(c.Dir, filepath.FromSlash(f)))
		if err != nil {
			t.Fatalf("parquet-go read %s: %v", f, err)
		}
		rows = append(rows, rs...)
	}
	if len(rows) != 18 {
		t.Fatalf("read %d aggregate rows, want 18", len(rows))
	}
	byKey := map[string]pqAggRow{}
	for _, r := range rows {
		byKey[fmt.Sprintf("%s/%s/%d", r.Device, r.Window, r.TS.UnixNano())] = r
		if r.Metric != "temp" || r.Window != "1m" || r.Region != "local" || r.Site != "lab" || r.Edge != "edge-1" ||
			r.Unit == nil || *r.Unit != "C" || r.Count == nil {
			t.Errorf("row %+v", r)
		}
	}
	for _, b := range []*batch.Batch{partial, full} {
		for _, rd := range b.Readings {
			_, stat, window, _ := ParseAggName(rd.Metric)
			r, ok := byKey[fmt.Sprintf("%s/%s/%d", rd.Device, window, rd.TS)]
			if !ok {
				t.Fatalf("no row for %+v", rd)
			}
			got := []*float64{nil, r.Min, r.Max, r.Sum, r.Mean, r.Last, r.Stddev, r.P50, r.P90, r.P99}[stat]
			if stat == 0 {
				if *r.Count != int64(rd.Value) {
					t.Errorf("count of %+v = %d", rd, *r.Count)
				}
			} else if got == nil || *got != rd.Value {
				t.Errorf("%s of %+v = %v", AggStats[stat], rd, got)
			}
		}
	}
	// Statistics not sent are null.
	for _, r := range rows {
		if r.TS.Before(start.Add(4*time.Minute)) && (r.Sum != nil || r.P99 != nil || r.Last != nil) {
			t.Errorf("row %+v has statistics that were not sent", r)
		}
	}
	// The same batch again adds nothing, before and after a reopen.
	if got := w.Add(full, time.Now()); got != DuplicateCommitted {
		t.Errorf("re-add = %v, want DuplicateCommitted", got)
	}
	w.Close()
	w = mustOpen(t, c)
	if got := w.Add(partial, time.Now()); got != DuplicateCommitted {
		t.Errorf("re-add after reopen = %v, want DuplicateCommitted", got)
	}
	if tot := w.Totals(); tot.Rows != 68 || tot.Files != 3 {
		t.Errorf("totals after reopen = %+v", tot)
	}
}

// TestAggRecoveryRollsForward stops a flush of an aggregate batch right after
// its manifest: reopening must publish the file and know the batch.
func TestAggRecoveryRollsForward(t *testing.T) {
	c := testConfig(t)
	w := mustOpen(t, c)
	w.SetHook(func(s Stage) error {
		if s == StageCommitted {
			return errCrash
		}
		return nil
	})
	b := makeAggBatch(edge1, 1, t0.Truncate(time.Minute), 3, 2, true)
	w.Add(b, time.Now())
	if _, err := w.Flush(); !errors.Is(err, errCrash) {
		t.Fatalf("flush = %v, want the crash", err)
	}
	if len(tempFiles(t, filepath.Join(c.Dir, AggDir))) == 0 {
		t.Fatal("crash after the manifest left no temporary aggregate file")
	}
	orphan := filepath.Join(c.Dir, "agg/region=local/date=2025-03-04/hour=05", "."+"part-000000000009-00000001.parquet.tmp")
	if err := os.WriteFile(orphan, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w = mustOpen(t, c)
	if tf := tempFiles(t, c.Dir); len(tf) != 0 {
		t.Errorf("temporary files after recovery: %v", tf)
	}
	if got := w.Add(b, time.Now()); got != DuplicateCommitted {
		t.Errorf("batch of the interrupted flush: %v, want DuplicateCommitted", got)
	}
	var rows int
	filepath.WalkDir(filepath.Join(c.Dir, AggDir), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && lakefmt.IsDataFile(d.Name()) {
			rs, rerr := pq.ReadFile[pqAggRow](p)
			if rerr != nil {
				t.Errorf("read %s: %v", p, rerr)
			}
			rows += len(rs)
		}
		return err
	})
	if tot := w.Totals(); rows != 6 || tot.Rows != 6 || tot.Files != 2 {
		t.Errorf("after recovery: %d rows on disk, totals %+v; want 6 rows in 2 files", rows, tot)
	}
}

func TestParseManifestChecksAggFiles(t *testing.T) {
	good := `{"version":1,"seq":1,"rows":0,"files":[],"batches":[],"agg_rows":2,` +
		`"agg_files":[{"path":"agg/region=r/date=2025-03-04/hour=05/part-000000000001-00000001.parquet","rows":2,"min_ts":1,"max_ts":2}]}`
	if m, err := parseManifest([]byte(good)); err != nil || len(m.AggFiles) != 1 {
		t.Fatalf("parseManifest = %+v, %v", m, err)
	}
	for _, bad := range []string{
		strings.Replace(good, `"agg_rows":2`, `"agg_rows":3`, 1),
		strings.Replace(good, "agg/region=r", "raw/region=r", 1),
		strings.Replace(good, "agg/region=r", "agg/../../etc", 1),
		strings.Replace(good, "hour=05", "hour=25", 1),
	} {
		if _, err := parseManifest([]byte(bad)); err == nil {
			t.Errorf("parseManifest accepted %s", bad)
		}
	}
}
