package lake

// The row-by-row raw file writer, kept as the reference the columnar
// writer must agree with.

import (
	"bytes"
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// sortRows orders rows by device, metric and time (then edge and site so
// the order is total). Grouping by device makes the device and metric
// statistics of each row group narrow, which is what lets a query for one
// device skip most row groups, and it makes the columns compress well.
func sortRows(rows []*schemas.Reading) {
	if len(rows) < 2 {
		return
	}
	// Strings are replaced by their rank among the distinct values (a few
	// devices and metrics per flush), so the sort compares integers: on a
	// flush of a million rows this is several times faster than comparing
	// strings.
	type key struct {
		device, metric, edge, site uint32
		ts                         int64
		r                          *schemas.Reading
	}
	keys := make([]key, len(rows))
	device, metric, edge, site := newRanker(), newRanker(), newRanker(), newRanker()
	for i, r := range rows {
		keys[i] = key{device.id(r.Device), metric.id(r.Metric), edge.id(r.Edge), site.id(r.Site), r.TS, r}
	}
	dr, mr, er, sr := device.ranks(), metric.ranks(), edge.ranks(), site.ranks()
	for i := range keys {
		k := &keys[i]
		k.device, k.metric, k.edge, k.site = dr[k.device], mr[k.metric], er[k.edge], sr[k.site]
	}
	slices.SortFunc(keys, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.device, b.device), cmp.Compare(a.metric, b.metric), cmp.Compare(a.ts, b.ts),
			cmp.Compare(a.edge, b.edge), cmp.Compare(a.site, b.site))
	})
	for i := range keys {
		rows[i] = keys[i].r
	}
}

// ranker numbers distinct strings in order of appearance, then maps those
// numbers to the strings' sorted ranks.
type ranker struct {
	ids    map[string]uint32
	values []string
	last   string
	lastID uint32
}

func newRanker() *ranker { return &ranker{ids: map[string]uint32{}} }

func (r *ranker) id(s string) uint32 {
	// Rows of one device arrive together: skip the map for repeats.
	if len(r.values) > 0 && s == r.last {
		return r.lastID
	}
	id, ok := r.ids[s]
	if !ok {
		id = uint32(len(r.values))
		r.ids[s] = id
		r.values = append(r.values, s)
	}
	r.last, r.lastID = s, id
	return id
}

// ranks maps each id to the rank of its string in sorted order.
func (r *ranker) ranks() []uint32 {
	order := make([]uint32, len(r.values))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(a, b uint32) int { return cmp.Compare(r.values[a], r.values[b]) })
	rank := make([]uint32, len(r.values))
	for pos, id := range order {
		rank[id] = uint32(pos)
	}
	return rank
}

// writeParquet writes raw readings, already sorted, to a new file at path
// and fsyncs it.
func writeParquet(path string, rows []*schemas.Reading, rowGroupRows int) (fileInfo, error) {
	return writeParquetFile(path, RawSchema, writerProperties(rowGroupRows), rows, rowGroupRows, buildRecord)
}

// buildRecord turns rows into one Arrow record of RawSchema.
func buildRecord(rows []*schemas.Reading, info *fileInfo) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, RawSchema)
	defer b.Release()
	b.Reserve(len(rows))
	ts := b.Field(colTS).(*array.TimestampBuilder)
	region := b.Field(colRegion).(*array.StringBuilder)
	site := b.Field(colSite).(*array.StringBuilder)
	edge := b.Field(colEdge).(*array.StringBuilder)
	device := b.Field(colDevice).(*array.StringBuilder)
	metric := b.Field(colMetric).(*array.StringBuilder)
	value := b.Field(colValue).(*array.Float64Builder)
	unit := b.Field(colUnit).(*array.StringBuilder)
	for _, r := range rows {
		ts.UnsafeAppend(arrow.Timestamp(r.TS))
		region.Append(r.Region)
		site.Append(r.Site)
		edge.Append(r.Edge)
		device.Append(r.Device)
		metric.Append(r.Metric)
		value.UnsafeAppend(r.Value)
		if r.Unit == "" {
			unit.AppendNull()
		} else {
			unit.Append(r.Unit)
		}
		info.minTS, info.maxTS = min(info.minTS, r.TS), max(info.maxTS, r.TS)
	}
	return b.NewRecordBatch()
}

// TestRawFileMatchesReference writes the same rows with the columnar writer
// and with the reference (pqarrow from sorted readings) and checks that
// readers see the same file: rows in the same order, row groups, schema and
// stored Arrow schema, encodings and statistics.
func TestRawFileMatchesReference(t *testing.T) {
	hour := t0.Truncate(time.Hour)
	edge2 := schemas.EdgeID{Region: edge1.Region, Site: edge1.Site, Edge: "edge-2"}
	many := func(seq uint64) *batch.Batch {
		// More series than rows: the general sort.
		b := &batch.Batch{ID: batch.ID{Edge: edge2, Epoch: 3, Seq: seq}, Kind: schemas.KindRaw}
		for i := range 300 {
			b.Readings = append(b.Readings, schemas.Reading{Region: edge2.Region, Site: edge2.Site, Edge: edge2.Edge,
				Device: fmt.Sprintf("d%04d", (i*7919)%2000), Metric: fmt.Sprintf("m%d", i%3), Unit: []string{"", "V", "A"}[i%3],
				TS: hour.Add(time.Duration(i%50) * time.Second).UnixNano(), Value: float64(i)})
		}
		return b
	}
	other := schemas.EdgeID{Region: edge1.Region, Site: "yard", Edge: "edge-9"}
	noUnits := makeBatch(edge1, 4, 1, hour.Add(time.Minute), 1500)
	for i := range noUnits.Readings {
		noUnits.Readings[i].Unit = ""
	}
	tests := []struct {
		name    string
		rgRows  int
		batches []*batch.Batch
	}{
		{"one batch", 1000, []*batch.Batch{makeBatch(edge1, 1, 1, hour.Add(time.Minute), 2500)}},
		// Same times from several edges and sites, overlapping batches of
		// one edge: ties are broken by edge and site, and runs are sorted.
		{"overlapping", 1000, []*batch.Batch{makeBatch(edge1, 1, 1, hour, 1200), makeBatch(other, 1, 1, hour, 1200),
			makeBatch(edge2, 1, 1, hour, 800), makeBatch(edge1, 1, 2, hour.Add(-time.Second+30*time.Minute), 900),
			makeBatch(edge1, 1, 3, hour.Add(25*time.Minute), 1000)}},
		{"many series", 1000, []*batch.Batch{many(1), many(2)}},
		{"no units", 1000, []*batch.Batch{noUnits, makeBatch(edge1, 4, 2, hour.Add(2*time.Minute), 10)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var rows []*schemas.Reading
			var segs []segment
			for _, b := range tc.batches {
				for i := range b.Readings {
					rows = append(rows, &b.Readings[i])
				}
				segs = append(segs, segment{c: batch.ColumnsOf(b)})
			}
			sortRows(rows)
			ref := filepath.Join(dir, "ref.parquet")
			if _, err := writeParquet(ref, rows, tc.rgRows); err != nil {
				t.Fatal(err)
			}
			var f rawFile
			f.build(segs)
			got := filepath.Join(dir, "got.parquet")
			info, err := f.write(got, writerProperties(tc.rgRows), tc.rgRows)
			if err != nil {
				t.Fatal(err)
			}
			if info.rows != int64(len(rows)) {
				t.Fatalf("rows = %d, want %d", info.rows, len(rows))
			}
			want := make([]schemas.Reading, len(rows))
			for i, r := range rows {
				want[i] = *r
			}
			if back := readPqarrow(t, got); !slices.Equal(back, want) {
				for i := range want {
					if back[i] != want[i] {
						t.Fatalf("row %d of %d: %+v, want %+v", i, len(want), back[i], want[i])
					}
				}
				t.Fatalf("rows read back by pqarrow differ from the reference order")
			}
			if back := readParquetGo(t, got); !slices.Equal(back, want) {
				t.Fatalf("rows read back by parquet-go differ from the reference order")
			}
			compareMetadata(t, ref, got)
		})
	}
}

func compareMetadata(t *testing.T, ref, got string) {
	t.Helper()
	open := func(p string) *file.Reader {
		r, err := file.OpenParquetFile(p, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := open(ref).MetaData(), open(got).MetaData()
	if a.NumRowGroups() != b.NumRowGroups() || a.NumRows != b.NumRows {
		t.Fatalf("row groups %d/%d rows %d/%d", b.NumRowGroups(), a.NumRowGroups(), b.NumRows, a.NumRows)
	}
	if !a.Schema.Equals(b.Schema) {
		t.Errorf("schema %s, want %s", b.Schema, a.Schema)
	}
	if av, bv := a.KeyValueMetadata().FindValue("ARROW:schema"), b.KeyValueMetadata().FindValue("ARROW:schema"); av == nil || bv == nil || *av != *bv {
		t.Errorf("stored Arrow schema differs")
	}
	for g := range a.NumRowGroups() {
		ra, rb := a.RowGroup(g), b.RowGroup(g)
		if !slices.Equal(ra.SortingColumns(), rb.SortingColumns()) {
			t.Errorf("row group %d sorting columns %v, want %v", g, rb.SortingColumns(), ra.SortingColumns())
		}
		for c := range RawSchema.NumFields() {
			ca, _ := ra.ColumnChunk(c)
			cb, _ := rb.ColumnChunk(c)
			name := RawSchema.Field(c).Name
			if cb.Compression() != ca.Compression() || !slices.Equal(cb.Encodings(), ca.Encodings()) || cb.NumValues() != ca.NumValues() {
				t.Errorf("row group %d %s: compression %s encodings %v values %d, want %s %v %d", g, name,
					cb.Compression(), cb.Encodings(), cb.NumValues(), ca.Compression(), ca.Encodings(), ca.NumValues())
			}
			sa, _ := ca.Statistics()
			sb, _ := cb.Statistics()
			if (sa == nil) != (sb == nil) {
				t.Fatalf("row group %d %s: statistics %v, want %v", g, name, sb, sa)
			}
			if sa == nil {
				continue
			}
			ea, _ := sa.Encode()
			eb, _ := sb.Encode()
			if !bytes.Equal(ea.Min, eb.Min) || !bytes.Equal(ea.Max, eb.Max) || ea.NullCount != eb.NullCount ||
				ea.HasMin != eb.HasMin || ea.HasMax != eb.HasMax || sa.NumValues() != sb.NumValues() {
				t.Errorf("row group %d %s: statistics %+v (%d values), want %+v (%d values)", g, name, eb, sb.NumValues(), ea, sa.NumValues())
			}
		}
	}
}
