package lake

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/arrow-go/v18/parquet/schema"

	"github.com/updraft-io/updraft/schemas/batch"
)

// Raw files are written column by column from the batches' own columns:
// each batch's dictionary is mapped once to the file's dictionaries, rows
// are ordered by sorting a permutation on integer ranks, and string
// columns are handed to the Parquet dictionary encoder as the file's
// dictionary plus precomputed indices, so no string is copied or hashed per
// row. The files are the same as pqarrow writes from RawSchema: same
// Parquet schema, encodings, statistics and stored Arrow schema.

// rawParquetSchema is RawSchema as Parquet, and rawFileMetadata the
// key-value metadata pqarrow stores with it (the Arrow schema).
var rawParquetSchema, rawFileMetadata = func() (*schema.GroupNode, metadata.KeyValueMetadata) {
	sc, err := pqarrow.ToParquet(RawSchema, writerProperties(DefaultConfig().RowGroupRows),
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		panic(err)
	}
	meta := metadata.KeyValueMetadata{}
	meta.Append("ARROW:schema", base64.StdEncoding.EncodeToString(flight.SerializeSchema(RawSchema, memory.DefaultAllocator)))
	return sc.Root(), meta
}()

// segment is the rows of one batch that go to one file: all of them when
// rows is nil.
type segment struct {
	c    *batch.Columns
	rows []int32
}

func (s segment) len() int {
	if s.rows == nil {
		return s.c.Len()
	}
	return len(s.rows)
}

// fileDict numbers the distinct strings of one column of a file.
type fileDict struct {
	batch.Interner
	// rank maps an id to the position of its word in sorted order.
	rank []int32
	// sorted are the words in sorted order, as an Arrow array for the
	// Parquet dictionary encoder.
	sorted *array.String
	bytes  []parquet.ByteArray
}

func (d *fileDict) reset() {
	d.Reset()
	if d.sorted != nil {
		d.sorted.Release()
		d.sorted = nil
	}
}

// finish ranks the words and builds the sorted dictionary.
func (d *fileDict) finish() {
	var order []int32
	order, d.rank = d.Ranks(d.rank)
	b := array.NewStringBuilder(memory.DefaultAllocator)
	defer b.Release()
	d.bytes = d.bytes[:0]
	for _, id := range order {
		b.Append(d.Words[id])
		d.bytes = append(d.bytes, parquet.ByteArray(d.Words[id]))
	}
	d.sorted = b.NewStringArray()
}

// rawFile holds the rows of one raw file column by column; string columns
// hold ranks in their fileDict. Its buffers are reused from file to file.
type rawFile struct {
	region, site, edge, device, metric, unit fileDict

	ts                                []int64
	value                             []float64
	siteIx, edgeIx, devIx, metIx, uIx []int32
	perm                              []int32

	// sorted copies, written to the file
	sts                                    []int64
	svalue                                 []float64
	sSite, sEdge, sDev, sMet, sUnit, zeros []int32
	defLevels                              []int16
	// counts[s] is the end of series s (device rank * metrics + metric
	// rank) in file order when bySeries.
	counts   []int32
	bySeries bool
	// oneEdge: every row has the same edge and site; siteIx and edgeIx
	// are then not filled.
	oneEdge bool
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// build gathers the segments of one partition, all of one region, and
// orders them by device, metric, time, edge and site.
func (f *rawFile) build(segs []segment) {
	for _, d := range []*fileDict{&f.region, &f.site, &f.edge, &f.device, &f.metric, &f.unit} {
		d.reset()
	}
	n := 0
	type maps struct {
		site, edge int32
		dev, met   []int32
		unit       []int32
	}
	ms := make([]maps, len(segs))
	for i, s := range segs {
		n += s.len()
		e := s.c.ID.Edge
		f.region.ID(e.Region)
		m := &ms[i]
		m.site, m.edge = f.site.ID(e.Site), f.edge.ID(e.Edge)
		m.dev = mapWords(&f.device, s.c.Device.Words)
		m.met = mapWords(&f.metric, s.c.Metric.Words)
		m.unit = mapWords(&f.unit, s.c.Unit.Words)
	}
	for _, d := range []*fileDict{&f.region, &f.site, &f.edge, &f.device, &f.metric, &f.unit} {
		d.finish()
	}
	f.ts, f.value = grow(f.ts, n), grow(f.value, n)
	// A file of one edge (so one site) needs no per-row edge and site.
	f.oneEdge = len(f.edge.Words) == 1 && len(f.site.Words) == 1
	if !f.oneEdge {
		f.siteIx, f.edgeIx = grow(f.siteIx, n), grow(f.edgeIx, n)
	}
	f.devIx, f.metIx, f.uIx = grow(f.devIx, n), grow(f.metIx, n), grow(f.uIx, n)
	at := 0
	for i, s := range segs {
		m := &ms[i]
		toRank(m.dev, f.device.rank)
		toRank(m.met, f.metric.rank)
		toRank(m.unit, f.unit.rank)
		site, edge := f.site.rank[m.site], f.edge.rank[m.edge]
		c := s.c
		if s.rows == nil {
			k := c.Len()
			copy(f.ts[at:], c.TS)
			copy(f.value[at:], c.Value)
			if !f.oneEdge {
				fill(f.siteIx[at:at+k], site)
				fill(f.edgeIx[at:at+k], edge)
			}
			remap(f.devIx[at:at+k], c.Device.Index, m.dev)
			remap(f.metIx[at:at+k], c.Metric.Index, m.met)
			remap(f.uIx[at:at+k], c.Unit.Index, m.unit)
			at += k
			continue
		}
		for _, r := range s.rows {
			f.ts[at], f.value[at] = c.TS[r], c.Value[r]
			if !f.oneEdge {
				f.siteIx[at], f.edgeIx[at] = site, edge
			}
			f.devIx[at], f.metIx[at] = m.dev[c.Device.Index[r]], m.met[c.Metric.Index[r]]
			f.uIx[at] = -1
			if u := c.Unit.Index[r]; u >= 0 {
				f.uIx[at] = m.unit[u]
			}
			at++
		}
	}
	f.sort(n)
	f.gather(n)
}

func mapWords(d *fileDict, words []string) []int32 {
	m := make([]int32, len(words))
	for i, w := range words {
		m[i] = d.ID(w)
	}
	return m
}

func toRank(m, rank []int32) {
	for i, id := range m {
		m[i] = rank[id]
	}
}

func fill(s []int32, v int32) {
	for i := range s {
		s[i] = v
	}
}

// remap sets dst[i] to m[src[i]], or -1 where src[i] is -1.
func remap(dst, src, m []int32) {
	for i, x := range src {
		if x < 0 {
			dst[i] = -1
		} else {
			dst[i] = m[x]
		}
	}
}

// sort sets f.perm to the row order of the file: by (device, metric), then,
// within each series, by time, edge and site (batch.SeriesOrder: a counting
// sort on the series, after which edges' series, sent in time order, need
// only a check).
func (f *rawFile) sort(n int) {
	less := func(a, b int32) int {
		if f.oneEdge {
			return cmp.Compare(f.ts[a], f.ts[b])
		}
		return cmp.Or(cmp.Compare(f.ts[a], f.ts[b]), cmp.Compare(f.edgeIx[a], f.edgeIx[b]), cmp.Compare(f.siteIx[a], f.siteIx[b]))
	}
	f.perm, f.counts, f.bySeries = batch.SeriesOrder(f.perm, f.counts, f.devIx[:n], f.metIx[:n], len(f.device.Words), len(f.metric.Words), less)
}

// gather copies the rows into file order, one column at a time: each
// pass touches one column's rows of every batch of a series, which stays
// in cache where all columns at once would not.
func (f *rawFile) gather(n int) {
	f.sts, f.svalue = grow(f.sts, n), grow(f.svalue, n)
	f.sSite, f.sEdge, f.sDev, f.sMet, f.sUnit = grow(f.sSite, n), grow(f.sEdge, n), grow(f.sDev, n), grow(f.sMet, n), grow(f.sUnit, n)
	f.defLevels = grow(f.defLevels, n)
	f.zeros = grow(f.zeros, n)
	clear(f.zeros)
	permute(f.sts, f.ts, f.perm)
	permute(f.svalue, f.value, f.perm)
	// Files of one site or edge need no gather for it.
	if f.oneEdge || len(f.site.Words) == 1 {
		clear(f.sSite)
	} else {
		permute(f.sSite, f.siteIx, f.perm)
	}
	if f.oneEdge || len(f.edge.Words) == 1 {
		clear(f.sEdge)
	} else {
		permute(f.sEdge, f.edgeIx, f.perm)
	}
	if f.bySeries {
		// Device and metric are known from the series' position.
		nMet := len(f.metric.Words)
		start := int32(0)
		for s, end := range f.counts[:len(f.device.Words)*nMet] {
			fill(f.sDev[start:end], int32(s/nMet))
			fill(f.sMet[start:end], int32(s%nMet))
			start = end
		}
	} else {
		permute(f.sDev, f.devIx, f.perm)
		permute(f.sMet, f.metIx, f.perm)
	}
	for i, p := range f.perm {
		u := f.uIx[p]
		f.sUnit[i], f.defLevels[i] = max(u, 0), int16(1+u>>31)
	}
}

func permute[T any](dst, src []T, perm []int32) {
	for i, p := range perm {
		dst[i] = src[p]
	}
}

// write writes the built file to path in row groups of rowGroupRows and
// fsyncs it. On any error the file is removed.
func (f *rawFile) write(path string, props *parquet.WriterProperties, rowGroupRows int) (fileInfo, error) {
	n := len(f.perm)
	info := fileInfo{rows: int64(n), minTS: math.MaxInt64, maxTS: math.MinInt64}
	for _, ts := range f.sts[:n] {
		info.minTS, info.maxTS = min(info.minTS, ts), max(info.maxTS, ts)
	}
	err := createSynced(path, &info, func(w io.Writer) error {
		pw, err := file.NewParquetWriterWithError(w, rawParquetSchema, file.WithWriterProps(props),
			file.WithWriteMetadata(rawFileMetadata))
		if err != nil {
			return fmt.Errorf("parquet writer %s: %w", path, err)
		}
		for start := 0; start < n; start += rowGroupRows {
			if err := f.writeRowGroup(pw, start, min(start+rowGroupRows, n)); err != nil {
				pw.Close()
				return fmt.Errorf("write parquet %s: %w", path, err)
			}
		}
		if err := pw.Close(); err != nil {
			return fmt.Errorf("close parquet %s: %w", path, err)
		}
		return nil
	})
	return info, err
}

func (f *rawFile) writeRowGroup(pw *file.Writer, lo, hi int) (err error) {
	rg, err := pw.AppendRowGroupChecked()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := rg.Close(); err == nil {
			err = cerr
		}
	}()
	for col := range RawSchema.NumFields() {
		cw, err := rg.NextColumn()
		if err != nil {
			return err
		}
		switch col {
		case colTS:
			_, err = cw.(*file.Int64ColumnChunkWriter).WriteBatch(f.sts[lo:hi], nil, nil)
		case colValue:
			_, err = cw.(*file.Float64ColumnChunkWriter).WriteBatch(f.svalue[lo:hi], nil, nil)
		case colRegion:
			err = writeDictColumn(cw, &f.region, f.zeros[lo:hi], nil)
		case colSite:
			err = writeDictColumn(cw, &f.site, f.sSite[lo:hi], nil)
		case colEdge:
			err = writeDictColumn(cw, &f.edge, f.sEdge[lo:hi], nil)
		case colDevice:
			err = writeDictColumn(cw, &f.device, f.sDev[lo:hi], nil)
		case colMetric:
			err = writeDictColumn(cw, &f.metric, f.sMet[lo:hi], nil)
		case colUnit:
			err = writeDictColumn(cw, &f.unit, f.sUnit[lo:hi], f.defLevels[lo:hi])
		}
		if err == nil {
			err = cw.Close()
		}
		if err != nil {
			return fmt.Errorf("column %s: %w", RawSchema.Field(col).Name, err)
		}
	}
	return nil
}

// dictEncoder is the part of the Parquet writer's dictionary encoder used
// to seed it with a dictionary.
type dictEncoder interface {
	PutDictionary(arrow.Array) error
	NumEntries() int
}

var errNoDictionary = errors.New("column is not dictionary encoded")

// writeDictColumn writes one column chunk of a string column as the file's
// dictionary and the rows' indices into it. defLevels, for the optional
// column, is 0 where the row is null (its index is then ignored).
func writeDictColumn(cw file.ColumnChunkWriter, d *fileDict, idx []int32, defLevels []int16) error {
	// The dictionary is sorted, so the smallest and largest index present
	// are the column's min and max.
	lo, hi, nulls := int32(math.MaxInt32), int32(-1), 0
	for i, x := range idx {
		if defLevels != nil && defLevels[i] == 0 {
			nulls++
			continue
		}
		lo, hi = min(lo, x), max(hi, x)
	}
	if hi < 0 {
		// Only nulls: there is no dictionary to seed.
		_, err := cw.(*file.ByteArrayColumnChunkWriter).WriteBatch(nil, defLevels, nil)
		return err
	}
	enc, ok := cw.CurrentEncoder().(dictEncoder)
	if !ok {
		return errNoDictionary
	}
	if err := enc.PutDictionary(d.sorted); err != nil {
		return err
	}
	if enc.NumEntries() != d.sorted.Len() {
		return fmt.Errorf("dictionary of %d words holds %d entries", d.sorted.Len(), enc.NumEntries())
	}
	if st, ok := cw.PageStatistics().(*metadata.ByteArrayStatistics); ok && st != nil {
		st.IncNulls(int64(nulls))
		st.IncNumValues(int64(len(idx) - nulls))
		// Tokens and units are never empty, so no word here is the empty
		// string pqarrow's statistics would skip.
		st.SetMinMax(d.bytes[lo], d.bytes[hi])
	}
	// Null rows need a validity bitmap: the encoder skips their slots by it.
	var valid *memory.Buffer
	if nulls > 0 {
		bits := make([]byte, bitutil.BytesForBits(int64(len(idx))))
		for i, l := range defLevels {
			if l != 0 {
				bitutil.SetBit(bits, i)
			}
		}
		valid = memory.NewBufferBytes(bits)
	}
	indices := array.NewInt32Data(array.NewData(arrow.PrimitiveTypes.Int32, len(idx),
		[]*memory.Buffer{valid, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(idx))}, nil, nulls, 0))
	defer indices.Release()
	return cw.WriteDictIndices(indices, defLevels, nil)
}
