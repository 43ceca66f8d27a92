package lake

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// AggDir is the top-level folder of aggregate files, beside lakefmt.RawDir.
const AggDir = "agg"

// Column names of aggregate files that raw files do not have.
const (
	ColWindow = "window"
	ColCount  = "count"
)

// AggStats are the statistics an aggregate reading may carry, in the column
// order of aggregate files.
var AggStats = []string{"count", "min", "max", "sum", "mean", "last", "stddev", "p50", "p90", "p99"}

// AggColumns lists the columns of aggregate files in file order.
var AggColumns = append([]string{lakefmt.ColTS, ColWindow, lakefmt.ColRegion, lakefmt.ColSite, lakefmt.ColEdge,
	lakefmt.ColDevice, lakefmt.ColMetric}, append(slices.Clone(AggStats), lakefmt.ColUnit)...)

// AggSchema is the Arrow schema of aggregate files: one wide row per device,
// metric and window, each statistic nullable because an edge may send only
// some of them.
var AggSchema = func() *arrow.Schema {
	fields := []arrow.Field{
		{Name: lakefmt.ColTS, Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}},
		{Name: ColWindow, Type: arrow.BinaryTypes.String},
		{Name: lakefmt.ColRegion, Type: arrow.BinaryTypes.String},
		{Name: lakefmt.ColSite, Type: arrow.BinaryTypes.String},
		{Name: lakefmt.ColEdge, Type: arrow.BinaryTypes.String},
		{Name: lakefmt.ColDevice, Type: arrow.BinaryTypes.String},
		{Name: lakefmt.ColMetric, Type: arrow.BinaryTypes.String},
		{Name: ColCount, Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}
	for _, s := range AggStats[1:] {
		fields = append(fields, arrow.Field{Name: s, Type: arrow.PrimitiveTypes.Float64, Nullable: true})
	}
	fields = append(fields, arrow.Field{Name: lakefmt.ColUnit, Type: arrow.BinaryTypes.String, Nullable: true})
	return arrow.NewSchema(fields, nil)
}()

// Column positions in AggSchema.
const (
	aggColTS = iota
	aggColWindow
	aggColRegion
	aggColSite
	aggColEdge
	aggColDevice
	aggColMetric
	aggColCount // then one column per AggStats[1:], then unit
)

var aggColUnit = aggColCount + len(AggStats)

// ErrAggName: a reading of an aggregate batch whose metric is not
// "<metric>:<stat>:<window>".
var ErrAggName = errors.New("not an aggregate metric name")

// ParseAggName splits an aggregate reading's metric "<metric>:<stat>:<window>"
// (stat one of AggStats, window a positive whole number of milliseconds
// written as a Go duration such as 10s, 1m, 1h30m; schemas.AggregateMetric
// writes such names).
// The metric itself may contain ':'; stat and window are taken from the right.
func ParseAggName(name string) (metric string, stat int, window string, err error) {
	j := strings.LastIndexByte(name, ':')
	if j <= 0 {
		return "", 0, "", fmt.Errorf("%w: %q: want <metric>:<stat>:<window>", ErrAggName, name)
	}
	i := strings.LastIndexByte(name[:j], ':')
	if i <= 0 {
		return "", 0, "", fmt.Errorf("%w: %q: want <metric>:<stat>:<window>", ErrAggName, name)
	}
	metric, s, window := name[:i], name[i+1:j], name[j+1:]
	stat = slices.Index(AggStats, s)
	if stat < 0 {
		return "", 0, "", fmt.Errorf("%w: %q: statistic %q is not one of %s", ErrAggName, name, s, strings.Join(AggStats, ","))
	}
	if d, perr := time.ParseDuration(window); perr != nil || d <= 0 || d%time.Millisecond != 0 || strings.ContainsAny(window, "+-.") {
		return "", 0, "", fmt.Errorf("%w: %q: window %q is not a positive duration such as 1m", ErrAggName, name, window)
	}
	return metric, stat, window, nil
}

// ValidateAgg checks that every reading of an aggregate batch has an
// aggregate metric name and, for count, a whole non-negative value.
func ValidateAgg(b *batch.Batch) error {
	for i := range b.Readings {
		r := &b.Readings[i]
		_, stat, _, err := ParseAggName(r.Metric)
		if err != nil {
			return fmt.Errorf("reading %d: %w", i, err)
		}
		if stat == 0 && (r.Value < 0 || r.Value != math.Trunc(r.Value) || r.Value > math.MaxInt64/2) {
			return fmt.Errorf("reading %d: %w: count %v of %q is not a whole number", i, ErrAggName, r.Value, r.Metric)
		}
	}
	return nil
}

// AggPartitionDir is the folder of an aggregate partition relative to the
// lake root: agg/region=<r>/date=<YYYY-MM-DD>/hour=<HH>, the raw layout under
// AggDir.
func AggPartitionDir(p lakefmt.Partition) string {
	return path.Join(AggDir, strings.TrimPrefix(p.Dir(), lakefmt.RawDir+"/"))
}

// AggRow is one wide row of an aggregate file.
type AggRow struct {
	TS                               int64 // window start, ns
	Window                           string
	Region, Site, Edge, Device, Unit string
	Metric                           string
	// Has marks which of Stats (indexed like AggStats) were sent.
	Has   [10]bool
	Stats [10]float64
}

type aggKey struct {
	ts                                         int64
	window, region, site, edge, device, metric string
}

// foldAgg turns the readings of aggregate batches, already validated, into
// wide rows: one per (window start, window, edge, device, metric). A
// statistic sent twice for the same row keeps the later value.
func foldAgg(rs []*schemas.Reading) []*AggRow {
	idx := make(map[aggKey]*AggRow, len(rs)/4+1)
	out := make([]*AggRow, 0, len(rs)/4+1)
	for _, r := range rs {
		metric, stat, window, err := ParseAggName(r.Metric)
		if err != nil {
			continue // ValidateAgg ran at ingest
		}
		k := aggKey{r.TS, window, r.Region, r.Site, r.Edge, r.Device, metric}
		row := idx[k]
		if row == nil {
			row = &AggRow{TS: r.TS, Window: window, Region: r.Region, Site: r.Site, Edge: r.Edge, Device: r.Device, Metric: metric}
			idx[k] = row
			out = append(out, row)
		}
		row.Has[stat], row.Stats[stat] = true, r.Value
		if stat != 0 && r.Unit != "" {
			row.Unit = r.Unit
		}
	}
	slices.SortFunc(out, func(a, b *AggRow) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.Window, b.Window),
			cmp.Compare(a.TS, b.TS), cmp.Compare(a.Edge, b.Edge), cmp.Compare(a.Site, b.Site))
	})
	return out
}

func aggWriterProperties(rowGroupRows int) *parquet.WriterProperties {
	opts := []parquet.WriterProperty{
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithStats(true),
		parquet.WithDictionaryDefault(true),
		parquet.WithDictionaryFor(lakefmt.ColTS, false),
		parquet.WithMaxRowGroupLength(int64(rowGroupRows)),
		parquet.WithSortingColumns([]parquet.SortingColumn{
			{ColumnIdx: aggColDevice}, {ColumnIdx: aggColMetric}, {ColumnIdx: aggColWindow}, {ColumnIdx: aggColTS},
		}),
		parquet.WithCreatedBy("updraft-cloud"),
	}
	for _, s := range AggStats {
		opts = append(opts, parquet.WithDictionaryFor(s, false))
	}
	return parquet.NewWriterProperties(opts...)
}

// writeAggParquet writes aggregate rows, already sorted, to a new file at
// path and fsyncs it.
func writeAggParquet(path string, rows []*AggRow, rowGroupRows int) (fileInfo, error) {
	return writeParquetFile(path, AggSchema, aggWriterProperties(rowGroupRows), rows, rowGroupRows, buildAggRecord)
}

func buildAggRecord(rows []*AggRow, info *fileInfo) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, AggSchema)
	defer b.Release()
	b.Reserve(len(rows))
	ts := b.Field(aggColTS).(*array.TimestampBuilder)
	strs := map[int]*array.StringBuilder{}
	for _, c := range []int{aggColWindow, aggColRegion, aggColSite, aggColEdge, aggColDevice, aggColMetric} {
		strs[c] = b.Field(c).(*array.StringBuilder)
	}
	count := b.Field(aggColCount).(*array.Int64Builder)
	vals := make([]*array.Float64Builder, len(AggStats))
	for s := 1; s < len(AggStats); s++ {
		vals[s] = b.Field(aggColCount + s).(*array.Float64Builder)
	}
	unit := b.Field(aggColUnit).(*array.StringBuilder)
	for _, r := range rows {
		ts.UnsafeAppend(arrow.Timestamp(r.TS))
		strs[aggColWindow].Append(r.Window)
		strs[aggColRegion].Append(r.Region)
		strs[aggColSite].Append(r.Site)
		strs[aggColEdge].Append(r.Edge)
		strs[aggColDevice].Append(r.Device)
		strs[aggColMetric].Append(r.Metric)
		if r.Has[0] {
			count.Append(int64(r.Stats[0]))
		} else {
			count.AppendNull()
		}
		for s := 1; s < len(AggStats); s++ {
			if r.Has[s] {
				vals[s].Append(r.Stats[s])
			} else {
				vals[s].AppendNull()
			}
		}
		if r.Unit == "" {
			unit.AppendNull()
		} else {
			unit.Append(r.Unit)
		}
		info.minTS, info.maxTS = min(info.minTS, r.TS), max(info.maxTS, r.TS)
	}
	return b.NewRecordBatch()
}

// manifest is lakefmt.Manifest plus the aggregate files of the commit. They
// are listed apart so that the raw part keeps the lakefmt contract (files
// under raw/, Rows their sum) that other readers of the commit log check.
type manifest struct {
	lakefmt.Manifest
	AggRows  int64                  `json:"agg_rows,omitempty"`
	AggFiles []lakefmt.ManifestFile `json:"agg_files,omitempty"`
}

func (m *manifest) allFiles() []lakefmt.ManifestFile {
	return append(slices.Clip(m.Files), m.AggFiles...)
}

// parseManifest decodes and checks a manifest as lakefmt.ParseManifest does,
// and its aggregate files the same way under AggDir.
func parseManifest(data []byte) (*manifest, error) {
	base, err := lakefmt.ParseManifest(data)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	m.Manifest = *base
	var rows int64
	for _, f := range m.AggFiles {
		clean := path.Clean(f.Path)
		rest, ok := strings.CutPrefix(clean, AggDir+"/")
		if clean != f.Path || !ok || !lakefmt.IsDataFile(path.Base(clean)) {
			return nil, fmt.Errorf("parse manifest %d: file %q is not a data file under %s/", m.Seq, f.Path, AggDir)
		}
		if _, err := lakefmt.ParsePartition(path.Join(lakefmt.RawDir, path.Dir(rest))); err != nil {
			return nil, fmt.Errorf("parse manifest %d: aggregate %w", m.Seq, err)
		}
		if f.Rows <= 0 || f.MinTS > f.MaxTS {
			return nil, fmt.Errorf("parse manifest %d: file %q: rows %d, ts [%d,%d]", m.Seq, f.Path, f.Rows, f.MinTS, f.MaxTS)
		}
		rows += f.Rows
	}
	if rows != m.AggRows {
		return nil, fmt.Errorf("parse manifest %d: aggregate files hold %d rows, manifest says %d", m.Seq, rows, m.AggRows)
	}
	return &m, nil
}
