package lake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/arrow-go/v18/parquet/schema"
	pq "github.com/parquet-go/parquet-go"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

var edge1 = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}

// t0 is 2025-03-04 05:59:58.5 UTC: batches starting here cross an hour.
var t0 = time.Date(2025, 3, 4, 5, 59, 58, 500_000_000, time.UTC)

// makeBatch returns a decoded batch of n readings, one every 10ms from
// start, spread over 3 devices and 2 metrics, some without a unit.
func makeBatch(edge schemas.EdgeID, epoch, seq uint64, start time.Time, n int) *batch.Batch {
	b := &batch.Batch{ID: batch.ID{Edge: edge, Epoch: epoch, Seq: seq}, Kind: schemas.KindRaw}
	for i := range n {
		r := schemas.Reading{
			Region: edge.Region, Site: edge.Site, Edge: edge.Edge,
			Device: fmt.Sprintf("dev-%d", i%3), Metric: []string{"temp", "rh"}[i%2],
			TS:    start.Add(time.Duration(i) * 10 * time.Millisecond).UnixNano(),
			Value: float64(seq)*1000 + float64(i) + 0.25,
		}
		if i%5 != 0 {
			r.Unit = "C"
		}
		b.Readings = append(b.Readings, r)
	}
	b.MinTS, b.MaxTS = b.Readings[0].TS, b.Readings[n-1].TS
	return b
}

func testConfig(t testing.TB) Config {
	c := DefaultConfig()
	c.Dir = t.TempDir()
	c.RowGroupRows = MinRowGroupRows
	return c
}

func mustOpen(t testing.TB, c Config) *Writer {
	t.Helper()
	w, err := Open(c, nil)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// dataFiles lists committed data files under the lake, relative and sorted.
func dataFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, lakefmt.RawDir), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && lakefmt.IsDataFile(d.Name()) {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// tempFiles lists files under dir whose names are temporary.
func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && isTemp(d.Name()) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// pqRow is a lake row as parquet-go, an independent implementation, reads it.
type pqRow struct {
	TS     time.Time `parquet:"ts,timestamp(nanosecond)"`
	Region string    `parquet:"region"`
	Site   string    `parquet:"site"`
	Edge   string    `parquet:"edge"`
	Device string    `parquet:"device"`
	Metric string    `parquet:"metric"`
	Value  float64   `parquet:"value"`
	Unit   *string   `parquet:"unit,optional"`
}

func readParquetGo(t testing.TB, path string) []schemas.Reading {
	t.Helper()
	rows, err := pq.ReadFile[pqRow](path)
	if err != nil {
		t.Fatalf("parquet-go read %s: %v", path, err)
	}
	out := make([]schemas.Reading, len(rows))
	for i, r := range rows {
		out[i] = schemas.Reading{Region: r.Region, Site: r.Site, Edge: r.Edge, Device: r.Device, Metric: r.Metric,
			TS: r.TS.UnixNano(), Value: r.Value}
		if r.Unit != nil {
			out[i].Unit = *r.Unit
		}
	}
	return out
}

func readPqarrow(t testing.TB, path string) []schemas.Reading {
	t.Helper()
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	for i, f := range tbl.Schema().Fields() {
		want := RawSchema.Field(i)
		if f.Name != want.Name || !arrow.TypeEqual(f.Type, want.Type) || f.Nullable != want.Nullable {
			t.Fatalf("field %d read back as %s, want %s", i, f, want)
		}
	}
	tr := array.NewTableReader(tbl, -1)
	defer tr.Release()
	var out []schemas.Reading
	for tr.Next() {
		rec := tr.RecordBatch()
		ts := rec.Column(colTS).(*array.Timestamp)
		str := func(c, i int) string { return rec.Column(c).(*array.String).Value(i) }
		val := rec.Column(colValue).(*array.Float64)
		for i := 0; i < int(rec.NumRows()); i++ {
			out = append(out, schemas.Reading{TS: int64(ts.Value(i)), Region: str(colRegion, i), Site: str(colSite, i),
				Edge: str(colEdge, i), Device: str(colDevice, i), Metric: str(colMetric, i), Value: val.Value(i),
				Unit: str(colUnit, i)})
		}
	}
	return out
}

func sortReadings(rs []schemas.Reading) []schemas.Reading {
	ps := make([]*schemas.Reading, len(rs))
	for i := range rs {
		ps[i] = &rs[i]
	}
	sortRows(ps)
	out := make([]schemas.Reading, len(rs))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}

func TestFlushWritesPartitionsReadableByTwoImplementations(t *testing.T) {
	c := testConfig(t)
	w := mustOpen(t, c)
	b1 := makeBatch(edge1, 0xabc, 1, t0, 250)                 // 05:59:58.5 .. 06:00:00.99: two hours
	b2 := makeBatch(edge1, 0xabc, 2, t0.Add(time.Hour), 1500) // 06:59:58.5 .. 07:00:13.49: two hours
	for _, b := range []*batch.Batch{b1, b2} {
		if got := w.Add(b, time.Now()); got != Added {
			t.Fatalf("add %s = %v", b.ID, got)
		}
	}
	c1, err := w.Flush()
	if err != nil {
		t.Fatal(err)
	}
	if c1.Seq != 1 || c1.Rows != 1750 || len(c1.Files) != 3 || len(c1.Batches) != 2 {
		t.Fatalf("commit = seq %d rows %d files %v batches %d", c1.Seq, c1.Rows, c1.Files, len(c1.Batches))
	}
	files := dataFiles(t, c.Dir)
	wantDirs := []string{
		"raw/region=local/date=2025-03-04/hour=05",
		"raw/region=local/date=2025-03-04/hour=06",
		"raw/region=local/date=2025-03-04/hour=07",
	}
	if len(files) != 3 {
		t.Fatalf("files = %v", files)
	}
	for i, f := range files {
		if filepath.Dir(f) != wantDirs[i] {
			t.Errorf("file %d in %s, want %s", i, filepath.Dir(f), wantDirs[i])
		}
	}
	if tf := tempFiles(t, c.Dir); len(tf) != 0 {
		t.Errorf("temporary files left: %v", tf)
	}

	var want []schemas.Reading
	want = append(append(want, b1.Readings...), b2.Readings...)
	var gotGo, gotArrow []schemas.Reading
	for _, f := range files {
		p := filepath.Join(c.Dir, f)
		rGo, rArrow := readParquetGo(t, p), readPqarrow(t, p)
		part, err := lakefmt.ParsePartition(filepath.Dir(f))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rGo {
			if !part.Contains(r.TS) {
				t.Errorf("%s holds a reading at %s", f, r.Time())
			}
		}
		if !slices.IsSortedFunc(rArrow, func(a, b schemas.Reading) int { return rowCompare(&a, &b) }) {
			t.Errorf("%s: rows not sorted by device, metric, ts", f)
		}
		gotGo, gotArrow = append(gotGo, rGo...), append(gotArrow, rArrow...)
	}
	want = sortReadings(want)
	for name, got := range map[string][]schemas.Reading{"parquet-go": gotGo, "pqarrow": gotArrow} {
		got = sortReadings(got)
		if len(got) != len(want) {
			t.Fatalf("%s: %d rows, want %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s row %d = %+v, want %+v", name, i, got[i], want[i])
			}
		}
	}

	// The manifest names exactly the files and batches.
	data, err := os.ReadFile(filepath.Join(c.Dir, lakefmt.CommitsDir, lakefmt.ManifestName(1)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := lakefmt.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	var mfiles []string
	for _, f := range m.Files {
		mfiles = append(mfiles, f.Path)
	}
	slices.Sort(mfiles)
	if !slices.Equal(mfiles, files) || !slices.Equal(m.Batches, []string{b1.ID.MsgID(), b2.ID.MsgID()}) || m.Rows != 1750 {
		t.Errorf("manifest = %+v", m)
	}
	tot := w.Totals()
	if tot.Commits != 1 || tot.Rows != 1750 || tot.Batches != 2 || tot.Files != 3 || tot.PendingRows != 0 {
		t.Errorf("totals = %+v", tot)
	}
}

func rowCompare(a, b *schemas.Reading) int {
	s := []*schemas.Reading{a, b}
	if a == b || *a == *b {
		return 0
	}
	sortRows(s)
	if s[0] == a {
		return -1
	}
	return 1
}

func TestParquetColumnProperties(t *testing.T) {
	c := testConfig(t)
	w := mustOpen(t, c)
	w.Add(makeBatch(edge1, 1, 1, t0.Add(time.Minute), 2500), time.Now())
	if _, err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	files := dataFiles(t, c.Dir)
	pf, err := file.OpenParquetFile(filepath.Join(c.Dir, files[0]), false)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	md := pf.MetaData()
	if md.NumRowGroups() != 3 {
		t.Errorf("row groups = %d, want 3 (2500 rows at %d per group)", md.NumRowGroups(), c.RowGroupRows)
	}
	sc := md.Schema
	for i, name := range lakefmt.RawColumns {
		if got := sc.Column(i).Name(); got != name {
			t.Errorf("column %d = %s, want %s", i, got, name)
		}
	}
	ts := sc.Column(colTS).LogicalType().(schema.TimestampLogicalType)
	if !ts.IsAdjustedToUTC() || ts.TimeUnit() != schema.TimeUnitNanos {
		t.Errorf("ts logical type = %s, want timestamp ns adjusted to UTC", ts)
	}
	if sc.Column(colUnit).MaxDefinitionLevel() != 1 || sc.Column(colDevice).MaxDefinitionLevel() != 0 {
		t.Errorf("unit must be the only optional column")
	}
	rg := md.RowGroup(0)
	for i, name := range lakefmt.RawColumns {
		cc, err := rg.ColumnChunk(i)
		if err != nil {
			t.Fatal(err)
		}
		if cc.Compression() != compress.Codecs.Zstd {
			t.Errorf("%s compression = %s", name, cc.Compression())
		}
		if ok, err := cc.StatsSet(); !ok || err != nil {
			t.Errorf("%s has no statistics", name)
		}
		dict := slices.Contains(cc.Encodings(), parquet.Encodings.RLEDict) || slices.Contains(cc.Encodings(), parquet.Encodings.PlainDict)
		if wantDict := i >= colRegion && i <= colMetric || i == colUnit; dict != wantDict {
			t.Errorf("%s dictionary encoded = %v, want %v (encodings %v)", name, dict, wantDict, cc.Encodings())
		}
	}
}

func TestDuplicatesAreSkipped(t *testing.T) {
	c := testConfig(t)
	w := mustOpen(t, c)
	b := makeBatch(edge1, 7, 1, t0, 10)
	steps := []struct {
		name string
		do   func() AddResult
		want AddResult
	}{
		{"first", func() AddResult { return w.Add(b, time.Now()) }, Added},
		{"same batch in the same flush", func() AddResult { return w.Add(makeBatch(edge1, 7, 1, t0, 10), time.Now()) }, DuplicatePending},
		{"other epoch", func() AddResult { return w.Add(makeBatch(edge1, 8, 1, t0, 10), time.Now()) }, Added},
		{"after flush", func() AddResult {
			if _, err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			return w.Add(b, time.Now())
		}, DuplicateCommitted},
		{"after reopen", func() AddResult {
			w.Close()
			w = mustOpen(t, c)
			return w.Add(b, time.Now())
		}, DuplicateCommitted},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Errorf("%s: %v, want %v", s.name, got, s.want)
		}
	}
	if tot := w.Totals(); tot.Rows != 20 || tot.Batches != 2 {
		t.Errorf("totals after reopen = %+v, want 20 rows in 2 batches", tot)
	}
}

func TestDue(t *testing.T) {
	c := testConfig(t)
	c.RollRows = 100
	c.RollInterval = time.Second
	w := mustOpen(t, c)
	now := time.Unix(1000, 0)
	if w.Due(now) || !w.Deadline().IsZero() {
		t.Fatal("empty buffer is due")
	}
	w.Add(makeBatch(edge1, 1, 1, t0, 50), now)
	if w.Due(now.Add(999 * time.Millisecond)) {
		t.Error("due before the interval with 50 rows")
	}
	if !w.Due(now.Add(time.Second)) || !w.Deadline().Equal(now.Add(time.Second)) {
		t.Error("not due at the interval")
	}
	w.Add(makeBatch(edge1, 1, 2, t0, 50), now)
	if !w.Due(now) {
		t.Error("not due at roll_rows")
	}
}

var errCrash = errors.New("simulated crash")

func TestRecoveryRollsCommittedFlushForward(t *testing.T) {
	for _, stage := range []Stage{StageCommitted, StageRenamed} {
		t.Run(stage.String(), func(t *testing.T) {
			c := testConfig(t)
			w := mustOpen(t, c)
			w.Add(makeBatch(edge1, 1, 1, t0, 300), time.Now())
			if _, err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			w.SetHook(func(s Stage) error {
				if s == stage {
					return errCrash
				}
				return nil
			})
			b2 := makeBatch(edge1, 1, 2, t0.Add(2*time.Hour), 100)
			w.Add(b2, time.Now())
			if _, err := w.Flush(); !errors.Is(err, errCrash) {
				t.Fatalf("flush = %v, want the crash", err)
			}
			if _, err := w.Flush(); err == nil {
				t.Fatal("a writer whose flush failed must refuse to go on")
			}
			if stage == StageCommitted && len(tempFiles(t, filepath.Join(c.Dir, lakefmt.RawDir))) == 0 {
				t.Fatal("crash after the manifest left no temporary file to roll forward")
			}
			// Debris of a flush that never committed: recovery must delete it.
			orphan := filepath.Join(c.Dir, "raw/region=local/date=2025-03-04/hour=05", lakefmt.TempName(lakefmt.DataFileName(3, 1)))
			os.WriteFile(orphan, []byte("partial"), 0o644)
			halfManifest := filepath.Join(c.Dir, lakefmt.CommitsDir, "."+lakefmt.ManifestName(3)+".tmp")
			os.WriteFile(halfManifest, []byte("{"), 0o644)
			w.Close()

			w = mustOpen(t, c)
			if tf := tempFiles(t, c.Dir); len(tf) != 0 {
				t.Errorf("temporary files after recovery: %v", tf)
			}
			files := dataFiles(t, c.Dir)
			if len(files) != 3 { // the first flush crossed an hour
				t.Fatalf("files after recovery = %v", files)
			}
			var rows int
			for _, f := range files {
				rows += len(readParquetGo(t, filepath.Join(c.Dir, f)))
			}
			if rows != 400 {
				t.Errorf("rows after recovery = %d, want 400", rows)
			}
			if got := w.Add(b2, time.Now()); got != DuplicateCommitted {
				t.Errorf("batch of the interrupted flush: %v, want DuplicateCommitted", got)
			}
			if tot := w.Totals(); tot.Commits != 2 || tot.Rows != 400 || tot.Files != 3 || tot.MissingFiles != 0 {
				t.Errorf("totals = %+v", tot)
			}
			// The next commit continues the sequence.
			w.Add(makeBatch(edge1, 1, 3, t0, 1), time.Now())
			if c3, err := w.Flush(); err != nil || c3.Seq != 3 {
				t.Errorf("next commit = %+v, %v; want seq 3", c3, err)
			}
		})
	}
}

func TestRecoveryReportsMissingAndDamagedFiles(t *testing.T) {
	c := testConfig(t)
	w := mustOpen(t, c)
	w.Add(makeBatch(edge1, 1, 1, t0.Add(time.Minute), 10), time.Now())
	cm, err := w.Flush()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	os.Remove(filepath.Join(c.Dir, cm.Files[0]))
	w = mustOpen(t, c)
	if tot := w.Totals(); tot.MissingFiles != 1 {
		t.Errorf("missing files = %d, want 1", tot.MissingFiles)
	}
	w.Close()

	os.WriteFile(filepath.Join(c.Dir, lakefmt.CommitsDir, lakefmt.ManifestName(1)), []byte(`{"version":1,"seq":1,"rows":5}`), 0o644)
	if _, err := Open(c, nil); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("open with a damaged manifest = %v, want an error saying it is damaged", err)
	}
}

func TestSecondWriterIsRefused(t *testing.T) {
	c := testConfig(t)
	mustOpen(t, c)
	if _, err := Open(c, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open = %v, want ErrLocked", err)
	}
}

func TestReject(t *testing.T) {
	c := testConfig(t)
	w := mustOpen(t, c)
	r := Rejected{Stream: "TELEMETRY", StreamSeq: 42, Subject: "telemetry.local.lab.edge-1.raw",
		Header: map[string][]string{"Nats-Msg-Id": {"x"}}, Reason: "payload", Error: "bad", Body: []byte{0, 1, 2},
		ReceivedAt: time.Now().UTC()}
	p, err := w.Reject(r)
	if err != nil {
		t.Fatal(err)
	}
	var got Rejected
	data, _ := os.ReadFile(p)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(filepath.Join(filepath.Dir(p), got.BodyFile))
	if got.Reason != "payload" || got.Subject != r.Subject || got.Header["Nats-Msg-Id"][0] != "x" || string(body) != "\x00\x01\x02" || got.BodyBytes != 3 {
		t.Errorf("rejected = %+v body %q", got, body)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name, key string
		mut       func(*Config)
	}{
		{"ok", "", func(*Config) {}},
		{"no dir", "lake.dir", func(c *Config) { c.Dir = "" }},
		{"zero rows", "lake.roll_rows", func(c *Config) { c.RollRows = 0 }},
		{"interval too short", "lake.roll_interval", func(c *Config) { c.RollInterval = time.Millisecond }},
		{"interval too long", "lake.roll_interval", func(c *Config) { c.RollInterval = 2 * time.Hour }},
		{"tiny row groups", "lake.row_group_rows", func(c *Config) { c.RowGroupRows = 10 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mut(&c)
			err := c.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.key) || !strings.Contains(err.Error(), "allowed") {
				t.Fatalf("Validate() = %v, want an error naming %s and what is allowed", err, tt.key)
			}
		})
	}
}
