package lake

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math"
	"os"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/updraft-io/updraft/schemas"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// RawSchema is the Arrow schema of raw reading files. The timestamp's "UTC"
// zone makes Parquet mark it isAdjustedToUTC.
var RawSchema = arrow.NewSchema([]arrow.Field{
	{Name: lakefmt.ColTS, Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}},
	{Name: lakefmt.ColRegion, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColSite, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColEdge, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColDevice, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColMetric, Type: arrow.BinaryTypes.String},
	{Name: lakefmt.ColValue, Type: arrow.PrimitiveTypes.Float64},
	{Name: lakefmt.ColUnit, Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

// Column positions in RawSchema.
const (
	colTS = iota
	colRegion
	colSite
	colEdge
	colDevice
	colMetric
	colValue
	colUnit
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

func writerProperties(rowGroupRows int) *parquet.WriterProperties {
	return parquet.NewWriterProperties(
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithStats(true),
		parquet.WithDictionaryDefault(true),
		// Times and values rarely repeat: a dictionary would be built only to
		// be abandoned.
		parquet.WithDictionaryFor(lakefmt.ColTS, false),
		parquet.WithDictionaryFor(lakefmt.ColValue, false),
		parquet.WithMaxRowGroupLength(int64(rowGroupRows)),
		parquet.WithSortingColumns([]parquet.SortingColumn{
			{ColumnIdx: colDevice}, {ColumnIdx: colMetric}, {ColumnIdx: colTS},
		}),
		parquet.WithCreatedBy("updraft-cloud"),
	)
}

// fileInfo summarises a written data file.
type fileInfo struct {
	rows         int64
	minTS, maxTS int64
	bytes        int64
}

// noCloseWriter hides Close from pqarrow, which would otherwise close the
// file before it can be fsynced.
type noCloseWriter struct{ io.Writer }

// writeParquet writes raw readings, already sorted, to a new file at path
// and fsyncs it.
func writeParquet(path string, rows []*schemas.Reading, rowGroupRows int) (fileInfo, error) {
	return writeParquetFile(path, RawSchema, writerProperties(rowGroupRows), rows, rowGroupRows, buildRecord)
}

// writeParquetFile writes rows, already sorted, in row groups of
// rowGroupRows built by build, to a new file at path, and fsyncs it. On any
// error the file is removed: a half-written file never stays behind.
func writeParquetFile[T any](path string, schema *arrow.Schema, props *parquet.WriterProperties, rows []T, rowGroupRows int,
	build func([]T, *fileInfo) arrow.RecordBatch) (fileInfo, error) {
	info := fileInfo{rows: int64(len(rows)), minTS: math.MaxInt64, maxTS: math.MinInt64}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return info, fmt.Errorf("create %s: %w", path, err)
	}
	fail := func(err error) (fileInfo, error) {
		f.Close()
		os.Remove(path)
		return info, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	pw, err := pqarrow.NewFileWriter(schema, noCloseWriter{bw}, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return fail(fmt.Errorf("parquet writer %s: %w", path, err))
	}
	for start := 0; start < len(rows); start += rowGroupRows {
		rec := build(rows[start:min(start+rowGroupRows, len(rows))], &info)
		err := pw.Write(rec)
		rec.Release()
		if err != nil {
			pw.Close()
			return fail(fmt.Errorf("write parquet %s: %w", path, err))
		}
	}
	if err := pw.Close(); err != nil {
		return fail(fmt.Errorf("close parquet %s: %w", path, err))
	}
	if err := bw.Flush(); err != nil {
		return fail(fmt.Errorf("write %s: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync %s: %w", path, err))
	}
	if fi, err := f.Stat(); err == nil {
		info.bytes = fi.Size()
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return info, fmt.Errorf("close %s: %w", path, err)
	}
	return info, nil
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
