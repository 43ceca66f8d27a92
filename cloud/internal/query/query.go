// Package query answers point queries over the Parquet lake. It reads only
// what it must: partitions are chosen from the time range, and row groups
// are skipped by their min/max statistics, so a narrow query opens a few
// files and scans a few row groups however large the lake grows.
package query

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"golang.org/x/sync/errgroup"

	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// Request selects points. Empty string filters match everything.
type Request struct {
	Region, Site, Device, Metric string
	// From is inclusive, To exclusive.
	From, To time.Time
	// Limit caps the points returned, earliest first; 0 = no cap.
	Limit int
	// Step, when set, folds the points of each series into one per step
	// (counted from From) with Aggregate, one of Aggregates ("" = avg).
	Step      time.Duration
	Aggregate string
}

// Point is one reading in a result.
type Point struct {
	TS     time.Time
	Value  float64
	Unit   string
	Region string
	Site   string
	Edge   string
	Device string
	Metric string
}

// MarshalJSON renders ts as RFC 3339 with nanoseconds and a missing unit as null.
func (p Point) MarshalJSON() ([]byte, error) {
	var unit *string
	if p.Unit != "" {
		unit = &p.Unit
	}
	return json.Marshal(struct {
		TS     string  `json:"ts"`
		Value  float64 `json:"value"`
		Unit   *string `json:"unit"`
		Device string  `json:"device"`
		Metric string  `json:"metric"`
		Region string  `json:"region"`
		Site   string  `json:"site"`
		Edge   string  `json:"edge"`
	}{p.TS.UTC().Format(time.RFC3339Nano), p.Value, unit, p.Device, p.Metric, p.Region, p.Site, p.Edge})
}

// Result is a query's answer and what it cost.
type Result struct {
	Points        []Point `json:"points"`
	FilesRead     int     `json:"files_read"`
	RowGroupsRead int     `json:"row_groups_read"`
	RowsScanned   int64   `json:"rows_scanned"`
	// BytesRead is the compressed size of the column chunks read.
	BytesRead int64 `json:"bytes_read"`
	// Truncated is set when more points matched than Limit.
	Truncated bool `json:"truncated"`
}

// Engine queries one lake directory. It only reads, so it can run beside
// the writer: files appear under their final names atomically.
type Engine struct {
	dir string
}

// New returns an Engine over the lake at dir.
func New(dir string) *Engine { return &Engine{dir: dir} }

// Query returns the points matching req, earliest first; with req.Step,
// one aggregated point per series and step.
func (e *Engine) Query(ctx context.Context, req Request) (*Result, error) {
	if req.Step <= 0 {
		return e.points(ctx, req)
	}
	all := req
	all.Limit = 0
	res, err := e.points(ctx, all)
	if err != nil {
		return nil, err
	}
	res.Points = aggregate(res.Points, req)
	if req.Limit > 0 && len(res.Points) > req.Limit {
		res.Points, res.Truncated = res.Points[:req.Limit], true
	}
	return res, nil
}

func (e *Engine) points(ctx context.Context, req Request) (*Result, error) {
	parts, err := e.partitions(req)
	if err != nil {
		return nil, err
	}
	// Partitions of one hour (several regions) go together: only after a
	// whole hour is it certain no earlier point can still come.
	var hours [][]lakefmt.Partition
	for i := 0; i < len(parts); {
		j := i
		for j < len(parts) && parts[j].Hour.Equal(parts[i].Hour) {
			j++
		}
		hours = append(hours, parts[i:j])
		i = j
	}
	// Hours are scanned a few at a time in parallel (decoding Parquet is
	// CPU bound); the limit is checked after each round, in time order.
	// The first round is one hour, so a query that the earliest hour
	// satisfies reads nothing more.
	workers := max(1, runtime.GOMAXPROCS(0))
	res := &Result{Points: []Point{}}
	for i, n := 0, 1; i < len(hours); i, n = i+n, workers {
		round := hours[i:min(i+n, len(hours))]
		out := make([]*Result, len(round))
		g, gctx := errgroup.WithContext(ctx)
		for k, hp := range round {
			g.Go(func() error {
				r := &Result{}
				for _, p := range hp {
					if err := e.scanPartition(gctx, p, req, r); err != nil {
						return err
					}
				}
				out[k] = r
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		for _, r := range out {
			res.Points = append(res.Points, r.Points...)
			res.FilesRead += r.FilesRead
			res.RowGroupsRead += r.RowGroupsRead
			res.RowsScanned += r.RowsScanned
			res.BytesRead += r.BytesRead
		}
		// Strictly more than Limit, so Truncated below is exact.
		if req.Limit > 0 && len(res.Points) > req.Limit {
			break
		}
	}
	slices.SortStableFunc(res.Points, func(a, b Point) int { return a.TS.Compare(b.TS) })
	if req.Limit > 0 && len(res.Points) > req.Limit {
		res.Points, res.Truncated = res.Points[:req.Limit], true
	}
	return res, nil
}

// partitions lists the existing partitions whose hour overlaps the range,
// in time order; folders are listed, not generated, so a range of years
// costs only what exists.
func (e *Engine) partitions(req Request) ([]lakefmt.Partition, error) {
	raw := filepath.Join(e.dir, lakefmt.RawDir)
	regions, err := readDirNames(raw)
	if err != nil {
		return nil, err
	}
	var out []lakefmt.Partition
	for _, rd := range regions {
		region, ok := strings.CutPrefix(rd, "region=")
		if !ok || (req.Region != "" && region != req.Region) {
			continue
		}
		dates, err := readDirNames(filepath.Join(raw, rd))
		if err != nil {
			return nil, err
		}
		for _, dd := range dates {
			day, err := lakefmt.ParseDateDir(dd)
			if err != nil || !day.Before(req.To) || !day.Add(24*time.Hour).After(req.From) {
				continue
			}
			hours, err := readDirNames(filepath.Join(raw, rd, dd))
			if err != nil {
				return nil, err
			}
			for _, hd := range hours {
				h, err := lakefmt.ParseHourDir(hd)
				if err != nil {
					continue
				}
				p := lakefmt.Partition{Region: region, Hour: day.Add(time.Duration(h) * time.Hour)}
				if p.Overlaps(req.From, req.To) {
					out = append(out, p)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b lakefmt.Partition) int {
		if c := a.Hour.Compare(b.Hour); c != 0 {
			return c
		}
		return strings.Compare(a.Region, b.Region)
	})
	return out, nil
}

func readDirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

func (e *Engine) scanPartition(ctx context.Context, p lakefmt.Partition, req Request, res *Result) error {
	dir := filepath.Join(e.dir, filepath.FromSlash(p.Dir()))
	names, err := readDirNames(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if !lakefmt.IsDataFile(n) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := scanFile(ctx, filepath.Join(dir, n), req, res); err != nil {
			return err
		}
	}
	return nil
}

// columns are the leaf indices of the columns a query reads, found by name
// so files with extra columns still work.
type columns struct {
	ts, region, site, edge, device, metric, value, unit int
}

func scanFile(ctx context.Context, path string, req Request, res *Result) error {
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer pf.Close()
	res.FilesRead++
	md := pf.MetaData()
	var c columns
	for name, dst := range map[string]*int{
		lakefmt.ColTS: &c.ts, lakefmt.ColRegion: &c.region, lakefmt.ColSite: &c.site, lakefmt.ColEdge: &c.edge,
		lakefmt.ColDevice: &c.device, lakefmt.ColMetric: &c.metric, lakefmt.ColValue: &c.value, lakefmt.ColUnit: &c.unit,
	} {
		if *dst = md.Schema.ColumnIndexByName(name); *dst < 0 {
			return fmt.Errorf("%s: no column %q", path, name)
		}
	}
	from, to := req.From.UnixNano(), req.To.UnixNano()
	var groups []int
	for i := 0; i < md.NumRowGroups(); i++ {
		rg := md.RowGroup(i)
		keep := tsMayMatch(rg, c.ts, from, to)
		for _, f := range []struct {
			col int
			v   string
		}{{c.region, req.Region}, {c.site, req.Site}, {c.device, req.Device}, {c.metric, req.Metric}} {
			keep = keep && (f.v == "" || stringMayMatch(rg, f.col, f.v))
		}
		if keep {
			groups = append(groups, i)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	// Strings are read as dictionaries: the files store them dictionary
	// encoded, and decoding to plain strings would copy every value of every
	// row scanned, which is most of a narrow query's time.
	props := pqarrow.ArrowReadProperties{BatchSize: 64 * 1024}
	for _, col := range []int{c.region, c.site, c.edge, c.device, c.metric, c.unit} {
		props.SetReadDict(col, true)
	}
	fr, err := pqarrow.NewFileReader(pf, props, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	cols := []int{c.ts, c.region, c.site, c.edge, c.device, c.metric, c.value, c.unit}
	tbl, err := fr.ReadRowGroups(ctx, cols, groups)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer tbl.Release()
	res.RowGroupsRead += len(groups)
	for _, g := range groups {
		rg := md.RowGroup(g)
		for _, col := range cols {
			if cc, err := rg.ColumnChunk(col); err == nil {
				res.BytesRead += cc.TotalCompressedSize()
			}
		}
	}
	res.RowsScanned += tbl.NumRows()
	tr := array.NewTableReader(tbl, 64*1024)
	defer tr.Release()
	for tr.Next() {
		rec := tr.RecordBatch()
		ts, ok := rec.Column(0).(*array.Timestamp)
		if !ok {
			return fmt.Errorf("%s: column ts is %s, want timestamp", path, rec.Column(0).DataType())
		}
		var strs [5]strColumn
		for k := range strs {
			if strs[k], ok = asStrings(rec.Column(1 + k)); !ok {
				return fmt.Errorf("%s: column %s is %s, want string", path, rec.ColumnName(1+k), rec.Column(1+k).DataType())
			}
		}
		region, site, edge, device, metric := strs[0], strs[1], strs[2], strs[3], strs[4]
		value, ok := rec.Column(6).(*array.Float64)
		if !ok {
			return fmt.Errorf("%s: column value is %s, want double", path, rec.Column(6).DataType())
		}
		unit, ok := asStrings(rec.Column(7))
		if !ok {
			return fmt.Errorf("%s: column unit is %s, want string", path, rec.Column(7).DataType())
		}
		wantDevice, wantMetric := device.matcher(req.Device), metric.matcher(req.Metric)
		for i := 0; i < int(rec.NumRows()); i++ {
			t := int64(ts.Value(i))
			if t < from || t >= to || !wantDevice(i) || !wantMetric(i) ||
				(req.Site != "" && site.Value(i) != req.Site) || (req.Region != "" && region.Value(i) != req.Region) {
				continue
			}
			p := Point{TS: time.Unix(0, t).UTC(), Value: value.Value(i), Region: region.Value(i), Site: site.Value(i),
				Edge: edge.Value(i), Device: device.Value(i), Metric: metric.Value(i)}
			if unit.IsValid(i) {
				p.Unit = unit.Value(i)
			}
			res.Points = append(res.Points, p)
		}
	}
	return nil
}

// strColumn reads a string column decoded either plainly or as a
// dictionary.
type strColumn struct {
	plain *array.String
	dict  *array.Dictionary
	dv    *array.String
}

func asStrings(a arrow.Array) (strColumn, bool) {
	switch a := a.(type) {
	case *array.String:
		return strColumn{plain: a}, true
	case *array.Dictionary:
		if dv, ok := a.Dictionary().(*array.String); ok {
			return strColumn{dict: a, dv: dv}, true
		}
	}
	return strColumn{}, false
}

func (s strColumn) Value(i int) string {
	if s.plain != nil {
		return s.plain.Value(i)
	}
	return s.dv.Value(s.dict.GetValueIndex(i))
}

// matcher returns a test of row i against v ("" matches all). On a
// dictionary it compares indices, found once, instead of strings.
func (s strColumn) matcher(v string) func(int) bool {
	switch {
	case v == "":
		return func(int) bool { return true }
	case s.plain != nil:
		return func(i int) bool { return s.plain.Value(i) == v }
	}
	want := -1
	for k := 0; k < s.dv.Len(); k++ {
		if s.dv.Value(k) == v {
			want = k
			break
		}
	}
	if want < 0 {
		return func(int) bool { return false }
	}
	return func(i int) bool { return s.dict.GetValueIndex(i) == want }
}

func (s strColumn) IsValid(i int) bool {
	if s.plain != nil {
		return s.plain.IsValid(i)
	}
	return s.dict.IsValid(i)
}

// tsMayMatch reports whether the row group can hold a time in [from, to);
// without statistics it must be read.
func tsMayMatch(rg *metadata.RowGroupMetaData, col int, from, to int64) bool {
	cc, err := rg.ColumnChunk(col)
	if err != nil {
		return true
	}
	st, err := cc.Statistics()
	if err != nil || st == nil || !st.HasMinMax() {
		return true
	}
	s, ok := st.(*metadata.Int64Statistics)
	if !ok {
		return true
	}
	return s.Max() >= from && s.Min() < to
}

// stringMayMatch reports whether the row group can hold v in column col.
func stringMayMatch(rg *metadata.RowGroupMetaData, col int, v string) bool {
	cc, err := rg.ColumnChunk(col)
	if err != nil {
		return true
	}
	st, err := cc.Statistics()
	if err != nil || st == nil || !st.HasMinMax() {
		return true
	}
	s, ok := st.(*metadata.ByteArrayStatistics)
	if !ok {
		return true
	}
	return string(s.Min()) <= v && v <= string(s.Max())
}
