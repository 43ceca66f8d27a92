package query

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"golang.org/x/sync/errgroup"

	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// TestDictMatchAgrees checks that filtering by dictionary indices and
// filtering by decoded strings give the same answers.
func TestDictMatchAgrees(t *testing.T) {
	e := New(buildLake(t))
	for _, req := range []Request{
		{Device: "dev-3", Metric: "rh", From: start.Add(90 * time.Minute), To: start.Add(100 * time.Minute)},
		{Device: "dev-0", Site: "lab", Region: "local", From: start, To: start.Add(span)},
		{Metric: "temp", From: start.Add(2 * time.Hour), To: start.Add(3 * time.Hour)},
		{Device: "dev-99", From: start, To: start.Add(span)},
		{Site: "elsewhere", From: start, To: start.Add(span)},
	} {
		fast, err := e.Query(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		useDictMatch = false
		slow, err := e.Query(context.Background(), req)
		useDictMatch = true
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast.Points, slow.Points) || fast.RowGroupsRead != slow.RowGroupsRead {
			t.Errorf("%+v: %d points from %d row groups by index, %d from %d by string", req,
				len(fast.Points), fast.RowGroupsRead, len(slow.Points), slow.RowGroupsRead)
		}
	}
}

// fileRow is one row of a hand-written lake file.
type fileRow struct {
	ts                                 int64
	region, site, edge, device, metric string
	value                              float64
	unit                               string // "" is null
}

// writeLakeFile writes rows, in the order given, as one raw file of the
// partition of the first row in the lake at dir, with the given writer properties and string
// columns of Arrow type strType (string, or a dictionary of strings).
func writeLakeFile(t *testing.T, dir, name string, rows []fileRow, props *parquet.WriterProperties, strType arrow.DataType) string {
	t.Helper()
	str := func(name string, nullable bool) arrow.Field {
		return arrow.Field{Name: name, Type: strType, Nullable: nullable}
	}
	sc := arrow.NewSchema([]arrow.Field{
		{Name: lakefmt.ColTS, Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}},
		str(lakefmt.ColRegion, false), str(lakefmt.ColSite, false), str(lakefmt.ColEdge, false),
		str(lakefmt.ColDevice, false), str(lakefmt.ColMetric, false),
		{Name: lakefmt.ColValue, Type: arrow.PrimitiveTypes.Float64},
		str(lakefmt.ColUnit, true),
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	appendStr := func(col int, v string, null bool) {
		switch fb := b.Field(col).(type) {
		case *array.StringBuilder:
			if null {
				fb.AppendNull()
			} else {
				fb.Append(v)
			}
		case *array.BinaryDictionaryBuilder:
			if null {
				fb.AppendNull()
			} else if err := fb.AppendString(v); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("no builder for %T", fb)
		}
	}
	for _, r := range rows {
		b.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(r.ts))
		for k, v := range []string{r.region, r.site, r.edge, r.device, r.metric} {
			appendStr(1+k, v, false)
		}
		b.Field(6).(*array.Float64Builder).Append(r.value)
		appendStr(7, r.unit, r.unit == "")
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	p := lakefmt.PartitionOf(rows[0].region, rows[0].ts)
	path := filepath.Join(dir, filepath.FromSlash(p.Dir()), name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := pqarrow.NewFileWriter(sc, f, props, pqarrow.DefaultWriterProps())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFileLayouts reads files written in ways the lake writer does not
// (today) write them: strings plain instead of dictionary encoded, Arrow
// dictionary columns, small pages with page indexes, version 2 data pages,
// a row group per series, rows out of order. Each must give the same answer.
func TestFileLayouts(t *testing.T) {
	hour := time.Date(2025, 7, 1, 6, 0, 0, 0, time.UTC)
	var rows []fileRow
	for i := range 6000 {
		ts := hour.Add(time.Duration(i/20) * time.Second).UnixNano()
		d, m := i%10, (i/10)%2
		r := fileRow{ts: ts, region: "eu", site: "plant", edge: fmt.Sprintf("gw-%d", d%3),
			device: fmt.Sprintf("dev-%d", d), metric: []string{"temp", "rh"}[m], value: float64(i)}
		if m == 0 {
			r.unit = "C"
		}
		rows = append(rows, r)
	}
	// Sorted by device, metric, ts as the lake writer sorts; the last
	// case keeps the rows in arrival order instead.
	sorted := append([]fileRow(nil), rows...)
	sortRows(sorted)
	dictType := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}
	base := []parquet.WriterProperty{parquet.WithCompression(compress.Codecs.Zstd), parquet.WithStats(true),
		parquet.WithMaxRowGroupLength(2500)}
	props := func(extra ...parquet.WriterProperty) *parquet.WriterProperties {
		return parquet.NewWriterProperties(append(append([]parquet.WriterProperty(nil), base...), extra...)...)
	}
	for _, tt := range []struct {
		name    string
		rows    []fileRow
		props   *parquet.WriterProperties
		strType arrow.DataType
	}{
		{"dictionary", sorted, props(parquet.WithDictionaryDefault(true)), arrow.BinaryTypes.String},
		{"plain strings", sorted, props(parquet.WithDictionaryDefault(false)), arrow.BinaryTypes.String},
		{"arrow dictionaries", sorted, props(parquet.WithDictionaryDefault(true)), dictType},
		{"small pages, page index", sorted, props(parquet.WithDictionaryDefault(true), parquet.WithDataPageSize(512),
			parquet.WithBatchSize(64), parquet.WithPageIndexEnabled(true)), arrow.BinaryTypes.String},
		{"data page v2", sorted, props(parquet.WithDictionaryDefault(true), parquet.WithDataPageVersion(parquet.DataPageV2),
			parquet.WithDataPageSize(1024), parquet.WithBatchSize(100)), arrow.BinaryTypes.String},
		{"dictionary overflow", sorted, props(parquet.WithDictionaryDefault(true), parquet.WithDictionaryPageSizeLimit(16),
			parquet.WithBatchSize(100)), arrow.BinaryTypes.String},
		// Each row group is one series: every string column is constant
		// in it, and unit is either all null or all "C".
		{"row group per series", sorted, props(parquet.WithDictionaryDefault(true), parquet.WithMaxRowGroupLength(300)),
			arrow.BinaryTypes.String},
		{"unsorted", rows, props(parquet.WithDictionaryDefault(true)), arrow.BinaryTypes.String},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLakeFile(t, dir, lakefmt.DataFileName(1, 1), tt.rows, tt.props, tt.strType)
			e := New(dir)
			for _, req := range []Request{
				{Device: "dev-3", Metric: "rh", From: hour.Add(time.Minute), To: hour.Add(4 * time.Minute)},
				{Device: "dev-7", From: hour, To: hour.Add(time.Hour)},
				{Metric: "temp", Site: "plant", Region: "eu", From: hour.Add(30 * time.Second), To: hour.Add(90 * time.Second)},
				{From: hour, To: hour.Add(time.Hour)},
				{Device: "dev-77", From: hour, To: hour.Add(time.Hour)},
			} {
				var want []Point
				for _, r := range sorted {
					if r.ts >= req.From.UnixNano() && r.ts < req.To.UnixNano() && (req.Device == "" || r.device == req.Device) &&
						(req.Metric == "" || r.metric == req.Metric) && (req.Site == "" || r.site == req.Site) {
						want = append(want, Point{TS: time.Unix(0, r.ts).UTC(), Value: r.value, Unit: r.unit, Region: r.region,
							Site: r.site, Edge: r.edge, Device: r.device, Metric: r.metric})
					}
				}
				for _, dict := range []bool{true, false} {
					// By string, also seek by offset index at every gap.
					useDictMatch = dict
					if !dict {
						seekByIndexAfter = 1
					}
					res, err := e.Query(context.Background(), req)
					useDictMatch, seekByIndexAfter = true, batchRows
					if err != nil {
						t.Fatal(err)
					}
					got := res.Points
					if !slices.IsSortedFunc(got, func(a, b Point) int { return a.TS.Compare(b.TS) }) {
						t.Fatalf("%+v: points out of time order", req)
					}
					// Points of one time come in file order.
					sortPoints(got)
					sortPoints(want)
					if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
						t.Fatalf("%+v (dictionary indices %v): %d points, want %d", req, dict, len(got), len(want))
					}
				}
			}
		})
	}
}

// TestFooterCache checks that kept footers follow the files: a new file is
// read, a replaced one is read again, and a second query reads no footer.
func TestFooterCache(t *testing.T) {
	dir := t.TempDir()
	hour := time.Date(2025, 7, 1, 6, 0, 0, 0, time.UTC)
	props := parquet.NewWriterProperties(parquet.WithStats(true), parquet.WithDictionaryDefault(true))
	rowsOf := func(v float64, n int) []fileRow {
		var rows []fileRow
		for i := range n {
			rows = append(rows, fileRow{ts: hour.Add(time.Duration(i) * time.Second).UnixNano(), region: "eu", site: "s",
				edge: "e", device: "d", metric: "m", value: v})
		}
		return rows
	}
	first := writeLakeFile(t, dir, lakefmt.DataFileName(1, 1), rowsOf(1, 10), props, arrow.BinaryTypes.String)
	e := New(dir)
	req := Request{Device: "d", From: hour, To: hour.Add(time.Hour)}
	query := func() *Result {
		t.Helper()
		res, err := e.Query(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	cold, warm := query(), query()
	if len(cold.Points) != 10 || !reflect.DeepEqual(cold.Points, warm.Points) {
		t.Fatalf("%d points, then %d", len(cold.Points), len(warm.Points))
	}
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	if want := cold.BytesRead - warm.BytesRead; want <= 0 || want >= fi.Size() {
		t.Errorf("cold query read %d bytes, warm %d: want the footer's size between them", cold.BytesRead, warm.BytesRead)
	}

	writeLakeFile(t, dir, lakefmt.DataFileName(2, 2), rowsOf(2, 5), props, arrow.BinaryTypes.String)
	if res := query(); len(res.Points) != 15 || res.FilesRead != 2 {
		t.Fatalf("after a new file: %d points from %d files, want 15 from 2", len(res.Points), res.FilesRead)
	}

	// The same name with other contents: the footer kept for it is stale.
	if err := os.Remove(first); err != nil {
		t.Fatal(err)
	}
	writeLakeFile(t, dir, lakefmt.DataFileName(1, 1), rowsOf(3, 20), props, arrow.BinaryTypes.String)
	res := query()
	if len(res.Points) != 25 {
		t.Fatalf("after replacing a file: %d points, want 25", len(res.Points))
	}
	for _, p := range res.Points {
		if p.Value == 1 {
			t.Fatalf("point %+v comes from the replaced file", p)
		}
	}
}

// TestConcurrentQueries runs queries at once on one Engine, as a server
// does, sharing its kept footers and buffers.
func TestConcurrentQueries(t *testing.T) {
	e := New(buildLake(t))
	req := Request{Device: "dev-1", Metric: "temp", From: start, To: start.Add(span)}
	want, err := e.Query(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh Engine keeps the footers of a query that reads no row group;
	// the queries below share them and read every file at once.
	e = New(e.dir)
	if _, err := e.Query(context.Background(), Request{Device: "dev-99", From: start, To: start.Add(span)}); err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	for range 4 {
		g.Go(func() error {
			res, err := e.Query(context.Background(), req)
			if err == nil && !reflect.DeepEqual(res.Points, want.Points) {
				err = fmt.Errorf("%d points, want %d", len(res.Points), len(want.Points))
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// FuzzMatchIndices feeds the dictionary index decoder arbitrary pages: it
// must never panic, and what it returns must be ascending, disjoint rows of
// the page.
func FuzzMatchIndices(f *testing.F) {
	f.Add([]byte{3, 0x10, 0x02}, 8, int64(2))                          // RLE run of 8 twos
	f.Add([]byte{3, 0x03, 0x88, 0xc6, 0xfa}, 8, int64(1))              // one bit-packed group, 0..7
	f.Add([]byte{1, 0x20, 0x01, 0x03, 0xaa}, 24, int64(1))             // run, then a group
	f.Add([]byte{32, 0x02, 0xff, 0xff, 0xff, 0xff}, 1, int64(1<<32-1)) // widest
	f.Add([]byte{0, 0x08}, 4, int64(0))
	f.Fuzz(func(t *testing.T, data []byte, n int, want int64) {
		if n < 0 || n > 1<<16 {
			return
		}
		const first = 1000
		out, err := matchIndices(nil, data, n, first, want)
		if err != nil {
			return
		}
		last := int64(first)
		for _, r := range out {
			if r.lo < last || r.hi <= r.lo || r.hi > first+int64(n) {
				t.Fatalf("rows %v of %d from %d", out, n, first)
			}
			last = r.hi
		}
	})
}

// FuzzPlainIndexOf feeds the dictionary page decoder arbitrary pages.
func FuzzPlainIndexOf(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 'a', 2, 0, 0, 0, 'b', 'c'}, 2, "bc")
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, 1, "")
	f.Fuzz(func(t *testing.T, data []byte, n int, v string) {
		if n > 1<<16 {
			return
		}
		k, err := plainIndexOf(data, n, v)
		if err == nil && (k < -1 || k >= int64(max(n, 0))) {
			t.Fatalf("index %d of %d values", k, n)
		}
	})
}

func sortRows(rows []fileRow) {
	slices.SortStableFunc(rows, func(a, b fileRow) int {
		return cmp.Or(cmp.Compare(a.device, b.device), cmp.Compare(a.metric, b.metric), cmp.Compare(a.ts, b.ts))
	})
}

func sortPoints(ps []Point) {
	slices.SortStableFunc(ps, func(a, b Point) int {
		return cmp.Or(a.TS.Compare(b.TS), cmp.Compare(a.Device, b.Device), cmp.Compare(a.Metric, b.Metric))
	})
}
