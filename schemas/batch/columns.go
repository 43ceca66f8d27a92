package batch

import (
	"math"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/nats-io/nats.go"

	"github.com/updraft-io/updraft/schemas"
)

// Columns is a decoded raw batch kept column by column, as it travels: a
// consumer that writes columns (the Parquet lake) never materialises one
// schemas.Reading per row. Row i is (TS[i], Device.Word(i), Metric.Word(i),
// Value[i], Unit.Word(i)) of edge ID.Edge.
type Columns struct {
	ID     ID
	Kind   string
	Replay bool
	MinTS  int64
	MaxTS  int64

	TS     []int64
	Value  []float64
	Device Dict
	Metric Dict
	// Unit's index is -1 where the reading has no unit.
	Unit Dict
}

// Dict is a dictionary-coded string column: row i holds Words[Index[i]], or
// "" when Index[i] is -1. Words holds only the words some row references, each
// once.
type Dict struct {
	Words []string
	Index []int32
}

// Word is the string of row i.
func (d *Dict) Word(i int) string {
	if x := d.Index[i]; x >= 0 {
		return d.Words[x]
	}
	return ""
}

// Len is the number of rows.
func (c *Columns) Len() int { return len(c.TS) }

// Reading is row i as a reading.
func (c *Columns) Reading(i int) schemas.Reading {
	return schemas.Reading{Region: c.ID.Edge.Region, Site: c.ID.Edge.Site, Edge: c.ID.Edge.Edge,
		Device: c.Device.Word(i), Metric: c.Metric.Word(i), TS: c.TS[i], Value: c.Value[i], Unit: c.Unit.Word(i)}
}

// Batch expands c to one reading per row.
func (c *Columns) Batch() *Batch {
	rs := make([]schemas.Reading, c.Len())
	for i := range rs {
		rs[i] = c.Reading(i)
	}
	return &Batch{ID: c.ID, Kind: c.Kind, Replay: c.Replay, MinTS: c.MinTS, MaxTS: c.MaxTS, Readings: rs}
}

// ColumnsOf turns a batch into columns. Its readings must belong to
// b.ID.Edge, as Decode guarantees. MinTS and MaxTS are taken from the
// readings.
func ColumnsOf(b *Batch) *Columns {
	n := len(b.Readings)
	c := &Columns{ID: b.ID, Kind: b.Kind, Replay: b.Replay, MinTS: math.MaxInt64, MaxTS: math.MinInt64,
		TS: make([]int64, n), Value: make([]float64, n)}
	dev, met, unit := newDictOf(n), newDictOf(n), newDictOf(n)
	for i := range b.Readings {
		r := &b.Readings[i]
		c.TS[i], c.Value[i] = r.TS, r.Value
		c.MinTS, c.MaxTS = min(c.MinTS, r.TS), max(c.MaxTS, r.TS)
		dev.add(r.Device)
		met.add(r.Metric)
		if r.Unit == "" {
			unit.d.Index = append(unit.d.Index, -1)
		} else {
			unit.add(r.Unit)
		}
	}
	c.Device, c.Metric, c.Unit = dev.d, met.d, unit.d
	return c
}

type dictOf struct {
	d   Dict
	ids map[string]int32
}

func newDictOf(n int) *dictOf {
	return &dictOf{d: Dict{Index: make([]int32, 0, n)}, ids: map[string]int32{}}
}

func (d *dictOf) add(s string) {
	id, ok := d.ids[s]
	if !ok {
		id = int32(len(d.d.Words))
		d.ids[s] = id
		d.d.Words = append(d.d.Words, s)
	}
	d.d.Index = append(d.d.Index, id)
}

// DecodeColumns validates and decodes one batch message as Decode does, with
// the same checks and errors, and returns it as columns. Tokens are checked
// once per distinct word, not once per row.
func DecodeColumns(subject string, h nats.Header, data []byte) (*Columns, error) {
	id, kind, count, minTS, maxTS, err := checkEnvelope(subject, h, data)
	if err != nil {
		return nil, err
	}
	c := &Columns{ID: id, Kind: kind, Replay: h.Get(HdrReplay) == "1", MinTS: minTS, MaxTS: maxTS}
	err = readPayload(data, count, func(rec arrow.RecordBatch) error {
		if err := columns(c, rec); err != nil {
			// Decode names the first bad row; say the same.
			if _, rerr := rows(id.Edge, rec); rerr != nil {
				return rerr
			}
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, ts := range c.TS {
		lo, hi = min(lo, ts), max(hi, ts)
	}
	if lo != minTS || hi != maxTS {
		return nil, decodeErr("header "+HdrMinTS, ErrMismatch, "headers say [%d,%d], rows span [%d,%d]", minTS, maxTS, lo, hi)
	}
	return c, nil
}

// errInvalidRow: some row fails schemas.Reading.Validate; rows names it.
var errInvalidRow = decodeErr("payload", ErrReading, "invalid reading")

// columns fills c from rec. The value slices share the record's memory,
// which the Go allocator keeps alive as long as c refers to it.
func columns(c *Columns, rec arrow.RecordBatch) error {
	n := int(rec.NumRows())
	for i, col := range rec.Columns() {
		if col.Len() != n {
			return decodeErr("column "+Schema.Field(i).Name, ErrPayload, "%d values for %d rows", col.Len(), n)
		}
		if !Schema.Field(i).Nullable && col.NullN() != 0 {
			return decodeErr("column "+Schema.Field(i).Name, ErrPayload, "%d nulls in a required column", col.NullN())
		}
	}
	tsv := rec.Column(0).(*array.Timestamp).TimestampValues()
	c.TS = unsafe.Slice((*int64)(unsafe.SliceData(tsv)), len(tsv))
	c.Value = rec.Column(3).(*array.Float64).Float64Values()
	for i := range n {
		if c.TS[i] <= 0 {
			return errInvalidRow
		}
		if v := c.Value[i]; math.IsNaN(v) || math.IsInf(v, 0) {
			return errInvalidRow
		}
	}
	e := c.ID.Edge
	if schemas.ValidateToken("region", e.Region) != nil || schemas.ValidateToken("site", e.Site) != nil ||
		schemas.ValidateToken("edge", e.Edge) != nil {
		return errInvalidRow
	}
	var err error
	if c.Device, err = dictColumns(rec, 1, func(w string) bool { return schemas.ValidateToken("device", w) == nil }); err != nil {
		return err
	}
	if c.Metric, err = dictColumns(rec, 2, func(w string) bool { return schemas.ValidateToken("metric", w) == nil }); err != nil {
		return err
	}
	if c.Unit, err = dictColumns(rec, 4, func(w string) bool { return len(w) <= schemas.MaxTokenLen }); err != nil {
		return err
	}
	return nil
}

// dictColumns copies a dictionary column's indices, renumbering them over
// the words rows reference, and checks each referenced word once with ok.
// A null row (or, as Decode reads it, a row whose word is "") gets index -1
// when ok accepts "". Nothing is sized by the dictionary's length beyond
// what the decoder already allocated for it.
func dictColumns(rec arrow.RecordBatch, col int, ok func(string) bool) (Dict, error) {
	dc, err := dictColumn(rec, col)
	if err != nil {
		return Dict{}, err
	}
	n := dc.idx.Len()
	out := Dict{Index: make([]int32, n)}
	idx := dc.idx.Int32Values()
	// renum maps a dictionary index to its new index plus one (0: unseen).
	var renum []int32
	var renumMap map[int32]int32
	if dc.words.Len() <= 4*n+64 {
		renum = make([]int32, dc.words.Len())
	} else {
		renumMap = map[int32]int32{}
	}
	hasNulls := dc.idx.NullN() > 0
	last, lastNew := int32(-1), int32(-1)
	for i := range n {
		if hasNulls && dc.idx.IsNull(i) {
			if !ok("") {
				return Dict{}, errInvalidRow
			}
			out.Index[i] = -1
			continue
		}
		x := idx[i]
		if x == last {
			out.Index[i] = lastNew
			continue
		}
		var nx int32
		if renum != nil {
			nx = renum[x]
		} else {
			nx = renumMap[x]
		}
		if nx == 0 {
			w := dc.words.Value(int(x))
			if !ok(w) {
				return Dict{}, errInvalidRow
			}
			out.Words = append(out.Words, w)
			nx = int32(len(out.Words))
			if renum != nil {
				renum[x] = nx
			} else {
				renumMap[x] = nx
			}
		}
		last, lastNew = x, nx-1
		out.Index[i] = nx - 1
	}
	// Decode turns an empty word into "" and a missing unit; keep one
	// representation of "no unit": index -1.
	for j, w := range out.Words {
		if w == "" {
			for i, x := range out.Index {
				if x == int32(j) {
					out.Index[i] = -1
				}
			}
		}
	}
	return out, nil
}
