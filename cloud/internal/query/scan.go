package query

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
)

// A file is scanned a column at a time, narrowing a selection of row ranges
// as it goes: each filter column is read only where the previous ones
// matched, then ts only there, and the output columns only for the rows left.
// Rows are sorted by device, metric and ts, so one series is one short range
// of a row group and most of a row group's values are never decoded. Files
// sorted otherwise, or not at all, give the same answer, only slower.

// rowRange is a range of rows [lo, hi) of a row group.
type rowRange struct{ lo, hi int64 }

// batchRows is how many values are decoded at a time.
const batchRows = 16 * 1024

// seekByIndexAfter is how many rows a seek must pass over before it uses
// the offset index: a seek by index decodes its target page from the start
// even when it is the page already being read.
var seekByIndexAfter int64 = batchRows

// scratch holds the decoding buffers of one scan, reused across scans.
type scratch struct {
	bytes  []parquet.ByteArray
	ints   []int64
	floats []float64
	defs   []int16
	// intern turns repeated strings into one allocation.
	intern map[string]string
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{
		bytes: make([]parquet.ByteArray, batchRows), ints: make([]int64, batchRows),
		floats: make([]float64, batchRows), defs: make([]int16, batchRows), intern: make(map[string]string),
	}
}}

func (s *scratch) str(b []byte) string {
	if v, ok := s.intern[string(b)]; ok {
		return v
	}
	v := string(b)
	if len(s.intern) < 1<<16 {
		s.intern[v] = v
	}
	return v
}

func (e *Engine) scanFile(ctx context.Context, path string, req Request, res *Result) (err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	res.FilesRead++
	var (
		f  *os.File
		pr *file.Reader
	)
	defer func() {
		if f != nil {
			err = errors.Join(err, f.Close())
		}
	}()
	open := func() error {
		if f, err = os.Open(path); err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		return nil
	}
	ft := e.footers.get(path, fi)
	if ft == nil {
		if err := open(); err != nil {
			return err
		}
		if ft, pr, err = readFooter(path, f, fi); err != nil {
			return err
		}
		res.BytesRead += footerBytes(ft.md)
		e.footers.put(path, ft)
	}
	md, c := ft.md, ft.cols
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
	if pr == nil {
		if err := open(); err != nil {
			return err
		}
		if pr, err = file.NewParquetReader(f, file.WithMetadata(md), file.WithReadProps(readProps)); err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
	}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := scanRowGroup(pr.RowGroup(g), c, req, s, res); err != nil {
			return fmt.Errorf("read %s row group %d: %w", path, g, err)
		}
	}
	return nil
}

// scanRowGroup appends the points of one row group matching req to res.
func scanRowGroup(rg *file.RowGroupReader, c columns, req Request, s *scratch, res *Result) error {
	res.RowGroupsRead++
	res.RowsScanned += rg.NumRows()
	sel := []rowRange{{0, rg.NumRows()}}
	offsetIndexRead := false
	open := func(col int) (*cursor, error) {
		cc, err := rg.MetaData().ColumnChunk(col)
		if err != nil {
			return nil, err
		}
		cr, err := rg.Column(col)
		if err != nil {
			return nil, err
		}
		res.BytesRead += cc.TotalCompressedSize()
		cur := &cursor{cr: cr, s: s, seekable: cc.GetOffsetIndexLocation() != nil}
		cur.onSeek = func() {
			// The first seek reads the offset indexes of the whole row group.
			if !offsetIndexRead {
				offsetIndexRead = true
				res.BytesRead += offsetIndexBytes(rg.MetaData())
			}
		}
		return cur, nil
	}
	// Device first: it is the leading sort column, and the most selective.
	for _, f := range []struct {
		col int
		v   string
	}{{c.device, req.Device}, {c.metric, req.Metric}, {c.site, req.Site}, {c.region, req.Region}} {
		if f.v == "" {
			continue
		}
		out, err := matchDict(rg, f.col, f.v, res)
		if err == nil {
			out = intersect(sel, out)
		} else if errors.Is(err, errNotDictEncoded) {
			var cur *cursor
			if cur, err = open(f.col); err != nil {
				return err
			}
			out, err = cur.match(sel, f.v)
			cur.close()
		}
		if err != nil {
			return err
		}
		if sel = out; len(sel) == 0 {
			return nil
		}
	}

	from, to := req.From.UnixNano(), req.To.UnixNano()
	cur, err := open(c.ts)
	if err != nil {
		return err
	}
	var out []rowRange
	first := len(res.Points)
	n := int64(0)
	for _, r := range sel {
		n += r.hi - r.lo
	}
	// At most a row group's worth: a narrow time range keeps few of many rows.
	res.Points = slices.Grow(res.Points, int(min(n, 1<<16)))
	err = cur.int64s(sel, func(row, t int64) {
		if t >= from && t < to {
			out = appendRow(out, row)
			res.Points = append(res.Points, Point{TS: time.Unix(0, t).UTC()})
		}
	})
	cur.close()
	if err != nil {
		return err
	}
	if sel = out; len(sel) == 0 {
		return nil
	}
	points := res.Points[first:]

	if cur, err = open(c.value); err != nil {
		return err
	}
	i := 0
	err = cur.float64s(sel, func(_ int64, v float64) { points[i].Value = v; i++ })
	cur.close()
	if err != nil {
		return err
	}
	for _, f := range []struct {
		col    int
		filter string
		set    func(p *Point, v string)
	}{
		{c.region, req.Region, func(p *Point, v string) { p.Region = v }},
		{c.site, req.Site, func(p *Point, v string) { p.Site = v }},
		{c.edge, "", func(p *Point, v string) { p.Edge = v }},
		{c.device, req.Device, func(p *Point, v string) { p.Device = v }},
		{c.metric, req.Metric, func(p *Point, v string) { p.Metric = v }},
		{c.unit, "", func(p *Point, v string) { p.Unit = v }},
	} {
		if f.filter != "" {
			// Every row left holds the filter's value: no need to read it.
			for i := range points {
				f.set(&points[i], f.filter)
			}
			continue
		}
		if v, valid, ok := constantString(rg.MetaData(), f.col); ok {
			// The statistics say every row holds v (or null).
			if valid {
				for i := range points {
					f.set(&points[i], v)
				}
			}
			continue
		}
		if cur, err = open(f.col); err != nil {
			return err
		}
		i, last, seen := 0, "", false
		err = cur.strings(sel, func(_ int64, v []byte, valid bool) {
			if valid {
				// Neighbouring rows mostly repeat a value.
				if !seen || string(v) != last {
					last, seen = s.str(v), true
				}
				f.set(&points[i], last)
			}
			i++
		})
		cur.close()
		if err != nil {
			return err
		}
	}
	return nil
}

// useDictMatch turns on filtering dictionary-encoded columns by their
// indices; tests turn it off to check both paths agree.
var useDictMatch = true

// matchDict returns the rows of the row group whose column col holds v,
// from the column's dictionary indices, or errNotDictEncoded.
func matchDict(rg *file.RowGroupReader, col int, v string, res *Result) ([]rowRange, error) {
	d := rg.MetaData().Schema.Column(col)
	if !useDictMatch || d.MaxDefinitionLevel() != 0 || d.MaxRepetitionLevel() != 0 {
		return nil, errNotDictEncoded
	}
	cc, err := rg.MetaData().ColumnChunk(col)
	if err != nil {
		return nil, err
	}
	if !cc.HasDictionaryPage() {
		return nil, errNotDictEncoded
	}
	pr, err := rg.GetColumnPageReader(col)
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	res.BytesRead += cc.TotalCompressedSize()
	return matchDictPages(pr, rg.NumRows(), v)
}

// intersect returns the rows in both a and b, each ascending.
func intersect(a, b []rowRange) []rowRange {
	var out []rowRange
	for len(a) > 0 && len(b) > 0 {
		lo, hi := max(a[0].lo, b[0].lo), min(a[0].hi, b[0].hi)
		if lo < hi {
			out = append(out, rowRange{lo, hi})
		}
		if a[0].hi < b[0].hi {
			a = a[1:]
		} else {
			b = b[1:]
		}
	}
	return out
}

// appendRow adds row to the selection out, whose rows are ascending.
func appendRow(out []rowRange, row int64) []rowRange {
	if n := len(out); n > 0 && out[n-1].hi == row {
		out[n-1].hi++
		return out
	}
	return append(out, rowRange{row, row + 1})
}

// cursor reads one column chunk forward, decoding only selected rows.
type cursor struct {
	cr  file.ColumnChunkReader
	s   *scratch
	pos int64
	// seekable is set when the chunk has an offset index, so a seek can
	// jump over whole pages without reading them.
	seekable bool
	// onSeek is called before a seek by offset index.
	onSeek func()
}

// offsetIndexBytes is the size of the offset indexes of a row group's
// columns, which the reader fetches together.
func offsetIndexBytes(rg *metadata.RowGroupMetaData) int64 {
	var n int64
	for i := 0; i < rg.NumColumns(); i++ {
		if cc, err := rg.ColumnChunk(i); err == nil {
			if loc := cc.GetOffsetIndexLocation(); loc != nil {
				n += int64(loc.Length)
			}
		}
	}
	return n
}

func (c *cursor) close() { c.cr.Close() }

// seek moves to row, which is not before the current one.
func (c *cursor) seek(row int64) error {
	n := row - c.pos
	if n <= 0 {
		return nil
	}
	if c.seekable && n > seekByIndexAfter {
		c.onSeek()
		if err := c.cr.SeekToRow(row); err != nil {
			return err
		}
		c.pos = row
		return nil
	}
	var err error
	switch cr := c.cr.(type) {
	case *file.Int64ColumnChunkReader:
		_, err = cr.Skip(n)
	case *file.Float64ColumnChunkReader:
		_, err = cr.Skip(n)
	case *file.ByteArrayColumnChunkReader:
		_, err = cr.Skip(n)
	default:
		err = fmt.Errorf("column %s has unexpected type %s", c.cr.Descriptor().Name(), c.cr.Type())
	}
	if err == nil {
		err = c.cr.Err()
	}
	c.pos = row
	return err
}

// each calls read for every batch of selected rows, with the first row and
// the most rows to read; read returns how many rows it read, 0 only at the
// end of the chunk.
func (c *cursor) each(sel []rowRange, read func(row, n int64) (int64, error)) error {
	for _, sp := range sel {
		if err := c.seek(sp.lo); err != nil {
			return err
		}
		for c.pos < sp.hi {
			n, err := read(c.pos, min(sp.hi-c.pos, batchRows))
			if err != nil {
				return err
			}
			if n == 0 {
				if err := c.cr.Err(); err != nil {
					return err
				}
				return fmt.Errorf("column %s ends at row %d, before row %d", c.cr.Descriptor().Name(), c.pos, sp.hi)
			}
			c.pos += n
		}
	}
	return nil
}

func (c *cursor) defLevels() ([]int16, int16) {
	if d := c.cr.Descriptor().MaxDefinitionLevel(); d > 0 {
		return c.s.defs, d
	}
	return nil, 0
}

// values reads the selected rows of a column with read (a column chunk
// reader's ReadBatchInPage, into buf) and calls fn with each row's value;
// valid is false for a null.
func values[T any](c *cursor, sel []rowRange, buf []T,
	read func(n int64, vals []T, defs, reps []int16) (int64, int, error), fn func(row int64, v T, valid bool)) error {
	defs, maxDef := c.defLevels()
	var zero T
	return c.each(sel, func(row, n int64) (int64, error) {
		lvls, nv, err := read(n, buf, defs, nil)
		if err != nil {
			return 0, err
		}
		if defs == nil {
			for k, v := range buf[:nv] {
				fn(row+int64(k), v, true)
			}
			return lvls, nil
		}
		k := 0
		for j, d := range defs[:lvls] {
			if d == maxDef {
				fn(row+int64(j), buf[k], true)
				k++
			} else {
				fn(row+int64(j), zero, false)
			}
		}
		return lvls, nil
	})
}

// strings calls fn with each selected row's value; valid is false for a
// null, and v is valid only during the call: in one page, values point into
// the page or its dictionary instead of being copied.
func (c *cursor) strings(sel []rowRange, fn func(row int64, v []byte, valid bool)) error {
	cr, ok := c.cr.(*file.ByteArrayColumnChunkReader)
	if !ok {
		return fmt.Errorf("column %s is %s, want a string", c.cr.Descriptor().Name(), c.cr.Type())
	}
	return values(c, sel, c.s.bytes, cr.ReadBatchInPage, func(row int64, v parquet.ByteArray, valid bool) { fn(row, v, valid) })
}

// match returns the selected rows whose value is v.
func (c *cursor) match(sel []rowRange, v string) ([]rowRange, error) {
	var out []rowRange
	err := c.strings(sel, func(row int64, b []byte, valid bool) {
		if valid && string(b) == v {
			out = appendRow(out, row)
		}
	})
	return out, err
}

// int64s calls fn with each selected row's value; nulls are skipped.
func (c *cursor) int64s(sel []rowRange, fn func(row, v int64)) error {
	cr, ok := c.cr.(*file.Int64ColumnChunkReader)
	if !ok {
		return fmt.Errorf("column %s is %s, want int64", c.cr.Descriptor().Name(), c.cr.Type())
	}
	return values(c, sel, c.s.ints, cr.ReadBatchInPage, func(row, v int64, valid bool) {
		if valid {
			fn(row, v)
		}
	})
}

// float64s calls fn with each selected row's value, 0 for a null.
func (c *cursor) float64s(sel []rowRange, fn func(row int64, v float64)) error {
	cr, ok := c.cr.(*file.Float64ColumnChunkReader)
	if !ok {
		return fmt.Errorf("column %s is %s, want double", c.cr.Descriptor().Name(), c.cr.Type())
	}
	return values(c, sel, c.s.floats, cr.ReadBatchInPage, func(row int64, v float64, _ bool) { fn(row, v) })
}

// constantString reports, from its statistics, whether column col holds
// one value in every row of the row group: v, or null if !valid. Values of
// 64 bytes or more are not trusted, as some writers truncate them.
func constantString(rg *metadata.RowGroupMetaData, col int) (v string, valid, ok bool) {
	cc, err := rg.ColumnChunk(col)
	if err != nil {
		return "", false, false
	}
	st, err := cc.Statistics()
	if err != nil || st == nil || !st.HasNullCount() {
		return "", false, false
	}
	switch rows := rg.NumRows(); {
	case cc.NumValues() != rows:
		return "", false, false
	case st.NullCount() == rows:
		return "", false, true
	case st.NullCount() != 0 || !st.HasMinMax():
		return "", false, false
	}
	s, ok := st.(*metadata.ByteArrayStatistics)
	if !ok || len(s.Min()) >= 64 || string(s.Min()) != string(s.Max()) {
		return "", false, false
	}
	return string(s.Min()), true, true
}

// minMax returns column col's statistics in the row group when they carry a
// min and max, else nil: such a row group must be read.
func minMax(rg *metadata.RowGroupMetaData, col int) metadata.TypedStatistics {
	cc, err := rg.ColumnChunk(col)
	if err != nil {
		return nil
	}
	st, err := cc.Statistics()
	if err != nil || st == nil || !st.HasMinMax() {
		return nil
	}
	return st
}

// tsMayMatch reports whether the row group can hold a time in [from, to).
func tsMayMatch(rg *metadata.RowGroupMetaData, col int, from, to int64) bool {
	s, ok := minMax(rg, col).(*metadata.Int64Statistics)
	return !ok || s.Max() >= from && s.Min() < to
}

// stringMayMatch reports whether the row group can hold v in column col.
func stringMayMatch(rg *metadata.RowGroupMetaData, col int, v string) bool {
	s, ok := minMax(rg, col).(*metadata.ByteArrayStatistics)
	return !ok || string(s.Min()) <= v && v <= string(s.Max())
}
