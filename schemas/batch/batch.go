package batch

import (
	"cmp"
	"fmt"
	"math"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"

	"github.com/updraft-io/updraft/schemas"
)

// SchemaVersion is the version of the Arrow schema and headers below.
const SchemaVersion = 1

// Header names. Nats-Msg-Id is JetStream's deduplication key.
const (
	HdrSchema   = "Updraft-Schema"
	HdrEdge     = "Updraft-Edge"
	HdrEpoch    = "Updraft-Epoch"
	HdrSeq      = "Updraft-Batch-Seq"
	HdrCount    = "Updraft-Count"
	HdrMinTS    = "Updraft-Min-Ts"
	HdrMaxTS    = "Updraft-Max-Ts"
	HdrKind     = "Updraft-Kind"
	HdrReplay   = "Updraft-Replay"
	HdrMsgID    = nats.MsgIdHdr
	DefaultKind = schemas.KindRaw
)

// Decoding limits. A batch above them is rejected before it is expanded.
const (
	MaxRows         = 1 << 20
	MaxPayloadBytes = 64 << 20
	// maxDecodedBytes bounds what the decoder may allocate for one batch, so a
	// small compressed payload cannot claim gigabytes once decompressed.
	maxDecodedBytes = 512 << 20
)

var dictString = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}

// Schema is the Arrow schema of a batch. Region, site and edge are the same for
// every row of a batch and travel in the headers, not as columns.
var Schema = arrow.NewSchema([]arrow.Field{
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}},
	{Name: "device", Type: dictString},
	{Name: "metric", Type: dictString},
	{Name: "value", Type: arrow.PrimitiveTypes.Float64},
	{Name: "unit", Type: dictString, Nullable: true},
}, nil)

// ID identifies a batch globally and forever. Epoch is chosen at random when
// an edge buffer is created, so a wiped and re-created buffer never reuses an
// identity that the region or the lake has already seen.
type ID struct {
	Edge  schemas.EdgeID
	Epoch uint64
	Seq   uint64
}

// MsgID is the JetStream deduplication key: "<region>.<site>.<edge>:<epoch hex>:<seq>".
func (id ID) MsgID() string {
	return id.Edge.String() + ":" + strconv.FormatUint(id.Epoch, 16) + ":" + strconv.FormatUint(id.Seq, 10)
}

func (id ID) String() string { return id.MsgID() }

// Batch is a decoded batch.
type Batch struct {
	ID       ID
	Kind     string // schemas.KindRaw or schemas.KindAgg
	Replay   bool   // sent from the backlog after an outage, not live
	MinTS    int64
	MaxTS    int64
	Readings []schemas.Reading
}

// Message is an encoded batch ready to publish.
type Message struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

// Encode builds the NATS message for readings, which must all belong to
// id.Edge. Rows are ordered by device, metric and time, which groups similar
// values together and makes the zstd buffers several times smaller.
func Encode(id ID, kind string, replay bool, readings []schemas.Reading) (*Message, error) {
	if len(readings) == 0 {
		return nil, fmt.Errorf("encode batch %s: no readings", id)
	}
	if len(readings) > MaxRows {
		return nil, fmt.Errorf("encode batch %s: %d readings, at most %d", id, len(readings), MaxRows)
	}
	// Order rows without comparing strings: each distinct device, metric and
	// unit is numbered (Interner), rows are grouped by the device's and the
	// metric's rank (their places in string order), and the dictionaries
	// look words up by number.
	n := len(readings)
	var devs, mets, units Interner
	dev, met, unit := make([]int32, n), make([]int32, n), make([]int32, n)
	minTS, maxTS := int64(math.MaxInt64), int64(math.MinInt64)
	for i := range readings {
		r := &readings[i]
		if r.Region != id.Edge.Region || r.Site != id.Edge.Site || r.Edge != id.Edge.Edge {
			return nil, fmt.Errorf("encode batch %s: reading from %s.%s.%s does not belong to this edge", id, r.Region, r.Site, r.Edge)
		}
		dev[i], met[i], unit[i] = devs.ID(r.Device), mets.ID(r.Metric), -1
		if r.Unit != "" {
			unit[i] = units.ID(r.Unit)
		}
		minTS, maxTS = min(minTS, r.TS), max(maxTS, r.TS)
	}
	devOrder, devRank := devs.Ranks(nil)
	metOrder, metRank := mets.Ranks(nil)
	for i := range n {
		dev[i], met[i] = devRank[dev[i]], metRank[met[i]]
	}
	order, _, _ := SeriesOrder(nil, nil, dev, met, len(devRank), len(metRank), func(a, b int32) int {
		return cmp.Compare(readings[a].TS, readings[b].TS)
	})

	mem := memory.DefaultAllocator
	ts := array.NewInt64Builder(mem)
	val := array.NewFloat64Builder(mem)
	devDict, metDict, unitDict := newDict(mem, inOrder(devs.Words, devOrder), n), newDict(mem, inOrder(mets.Words, metOrder), n), newDict(mem, units.Words, n)
	defer func() { ts.Release(); val.Release(); devDict.release(); metDict.release(); unitDict.release() }()
	ts.Reserve(n)
	val.Reserve(n)
	for _, i := range order {
		ts.UnsafeAppend(readings[i].TS)
		val.UnsafeAppend(readings[i].Value)
		devDict.append(dev[i])
		metDict.append(met[i])
		if unit[i] < 0 {
			unitDict.appendNull()
		} else {
			unitDict.append(unit[i])
		}
	}
	tsArr := ts.NewArray()
	defer tsArr.Release()
	tsData := array.NewData(Schema.Field(0).Type, tsArr.Len(), tsArr.Data().Buffers(), nil, 0, 0)
	tsCol := array.MakeFromData(tsData)
	tsData.Release()
	cols := []arrow.Array{tsCol, devDict.finish(), metDict.finish(), val.NewArray(), unitDict.finish()}
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	rec := array.NewRecordBatch(Schema, cols, int64(len(readings)))
	defer rec.Release()

	data, err := writeStream(rec)
	if err != nil {
		return nil, fmt.Errorf("encode batch %s: %w", id, err)
	}
	if kind == "" {
		kind = DefaultKind
	}
	h := nats.Header{}
	h.Set(HdrSchema, strconv.Itoa(SchemaVersion))
	h.Set(HdrEdge, id.Edge.String())
	h.Set(HdrEpoch, strconv.FormatUint(id.Epoch, 16))
	h.Set(HdrSeq, strconv.FormatUint(id.Seq, 10))
	h.Set(HdrCount, strconv.Itoa(len(readings)))
	h.Set(HdrMinTS, strconv.FormatInt(minTS, 10))
	h.Set(HdrMaxTS, strconv.FormatInt(maxTS, 10))
	h.Set(HdrKind, kind)
	if replay {
		h.Set(HdrReplay, "1")
	}
	h.Set(HdrMsgID, id.MsgID())
	return &Message{Subject: schemas.TelemetrySubject(id.Edge, kind), Header: h, Data: data}, nil
}

// inOrder returns words in the given order.
func inOrder(words []string, order []int32) []string {
	out := make([]string, len(order))
	for i, j := range order {
		out[i] = words[j]
	}
	return out
}

// dict builds a dictionary-encoded string column of rows that name their
// word by its index in names; the column's words are numbered in order of
// first use.
type dict struct {
	idx   *array.Int32Builder
	words *array.StringBuilder
	names []string
	word  []int32 // index in names -> word number, -1 until used
}

func newDict(mem memory.Allocator, names []string, rows int) *dict {
	d := &dict{idx: array.NewInt32Builder(mem), words: array.NewStringBuilder(mem), names: names, word: make([]int32, len(names))}
	for i := range d.word {
		d.word[i] = -1
	}
	d.idx.Reserve(rows)
	return d
}

func (d *dict) append(name int32) {
	w := d.word[name]
	if w < 0 {
		w = int32(d.words.Len())
		d.word[name] = w
		d.words.Append(d.names[name])
	}
	d.idx.Append(w)
}

func (d *dict) appendNull() { d.idx.AppendNull() }

func (d *dict) finish() arrow.Array {
	idx, words := d.idx.NewArray(), d.words.NewArray()
	defer idx.Release()
	defer words.Release()
	return array.NewDictionaryArray(dictString, idx, words)
}

func (d *dict) release() { d.idx.Release(); d.words.Release() }
