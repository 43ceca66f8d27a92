package batch

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"

	"github.com/updraft-io/updraft/schemas"
)

// Decode validates and decodes one batch message. subject may be "" when the
// caller does not know it (e.g. a file replay); otherwise it must agree with
// the headers. Every failure is a *DecodeError wrapping one of the sentinels.
func Decode(subject string, h nats.Header, data []byte) (*Batch, error) {
	id, kind, count, minTS, maxTS, err := checkEnvelope(subject, h, data)
	if err != nil {
		return nil, err
	}
	readings, err := decodePayload(id.Edge, data, count)
	if err != nil {
		return nil, err
	}
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for i := range readings {
		lo, hi = min(lo, readings[i].TS), max(hi, readings[i].TS)
	}
	if lo != minTS || hi != maxTS {
		return nil, decodeErr("header "+HdrMinTS, ErrMismatch, "headers say [%d,%d], rows span [%d,%d]", minTS, maxTS, lo, hi)
	}
	return &Batch{ID: id, Kind: kind, Replay: h.Get(HdrReplay) == "1", MinTS: minTS, MaxTS: maxTS, Readings: readings}, nil
}

// checkEnvelope decodes the headers and checks them against the subject and
// the payload's size, before the payload is read.
func checkEnvelope(subject string, h nats.Header, data []byte) (id ID, kind string, count int, minTS, maxTS int64, err error) {
	id, kind, count, minTS, maxTS, err = decodeHeader(h)
	if err != nil {
		return
	}
	if subject != "" && subject != schemas.TelemetrySubject(id.Edge, kind) {
		err = decodeErr("subject", ErrMismatch, "subject %q does not match edge %s kind %s", subject, id.Edge, kind)
		return
	}
	if len(data) > MaxPayloadBytes {
		err = decodeErr("payload", ErrTooLarge, "%d bytes, at most %d", len(data), MaxPayloadBytes)
	}
	return
}

func decodeHeader(h nats.Header) (id ID, kind string, count int, minTS, maxTS int64, err error) {
	get := func(name string) (string, error) {
		v := h.Values(name)
		if len(v) != 1 || v[0] == "" {
			return "", decodeErr("header "+name, ErrHeader, "want exactly one non-empty value, got %d", len(v))
		}
		return v[0], nil
	}
	num := func(name string, base, bits int) (uint64, error) {
		s, err := get(name)
		if err != nil {
			return 0, err
		}
		n, perr := strconv.ParseUint(s, base, bits)
		if perr != nil {
			return 0, decodeErr("header "+name, ErrHeader, "%q is not a number", s)
		}
		return n, nil
	}
	signed := func(name string) (int64, error) {
		s, err := get(name)
		if err != nil {
			return 0, err
		}
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil {
			return 0, decodeErr("header "+name, ErrHeader, "%q is not a number", s)
		}
		return n, nil
	}
	var v uint64
	if v, err = num(HdrSchema, 10, 16); err != nil {
		return
	}
	if v != SchemaVersion {
		err = decodeErr("header "+HdrSchema, ErrHeader, "version %d, this build reads version %d", v, SchemaVersion)
		return
	}
	var edge string
	if edge, err = get(HdrEdge); err != nil {
		return
	}
	if id.Edge, err = schemas.ParseEdgeID(edge); err != nil {
		err = &DecodeError{Part: "header " + HdrEdge, Err: fmt.Errorf("%w: %w", ErrHeader, err)}
		return
	}
	if id.Epoch, err = num(HdrEpoch, 16, 64); err != nil {
		return
	}
	if id.Seq, err = num(HdrSeq, 10, 64); err != nil {
		return
	}
	if v, err = num(HdrCount, 10, 64); err != nil {
		return
	}
	if v == 0 || v > MaxRows {
		err = decodeErr("header "+HdrCount, ErrTooLarge, "%d rows, want 1 to %d", v, MaxRows)
		return
	}
	count = int(v)
	if minTS, err = signed(HdrMinTS); err != nil {
		return
	}
	if maxTS, err = signed(HdrMaxTS); err != nil {
		return
	}
	if minTS > maxTS {
		err = decodeErr("header "+HdrMinTS, ErrHeader, "min %d after max %d", minTS, maxTS)
		return
	}
	if kind, err = get(HdrKind); err != nil {
		return
	}
	if kind != schemas.KindRaw && kind != schemas.KindAgg {
		err = decodeErr("header "+HdrKind, ErrHeader, "%q, want raw or agg", kind)
		return
	}
	var msgID string
	if msgID, err = get(HdrMsgID); err != nil {
		return
	}
	if msgID != id.MsgID() {
		err = decodeErr("header "+HdrMsgID, ErrMismatch, "%q, want %q from the other headers", msgID, id.MsgID())
	}
	return
}

// errAllocLimit is the panic value of limitAllocator; Decode turns it into ErrTooLarge.
var errAllocLimit = errors.New("allocation limit")

// limitAllocator refuses to hand out more than left bytes in total.
type limitAllocator struct {
	memory.Allocator
	left int
}

func (a *limitAllocator) Allocate(n int) []byte {
	if n > a.left {
		panic(errAllocLimit)
	}
	a.left -= n
	return a.Allocator.Allocate(n)
}

func (a *limitAllocator) Reallocate(n int, b []byte) []byte {
	if grow := n - len(b); grow > a.left {
		panic(errAllocLimit)
	} else if grow > 0 {
		a.left -= grow
	}
	return a.Allocator.Reallocate(n, b)
}

func decodePayload(edge schemas.EdgeID, data []byte, count int) ([]schemas.Reading, error) {
	var readings []schemas.Reading
	err := readPayload(data, count, func(rec arrow.RecordBatch) (err error) {
		readings, err = rows(edge, rec)
		return err
	})
	return readings, err
}

// readPayload reads the one record batch of a payload, checks its schema
// and row count, and hands it to use before the reader is released.
func readPayload(data []byte, count int, use func(arrow.RecordBatch) error) (err error) {
	defer func() {
		// The IPC reader validates frames, but a batch is untrusted input: any
		// panic deep in a decompressor or array constructor is a bad payload,
		// never a crash of the consumer.
		if p := recover(); p != nil {
			if p == errAllocLimit {
				err = decodeErr("payload", ErrTooLarge, "decoded size exceeds %d bytes", maxDecodedBytes)
				return
			}
			err = decodeErr("payload", ErrPayload, "%v", p)
		}
	}()
	if err := checkIPCMetadata(data); err != nil {
		return decodeErr("payload", ErrPayload, "%v", err)
	}
	mem := &limitAllocator{Allocator: memory.NewGoAllocator(), left: maxDecodedBytes}
	r, err := ipc.NewReader(bytes.NewReader(data), ipc.WithAllocator(mem), ipc.WithBodySizeLimit(MaxPayloadBytes))
	if err != nil {
		return readerErr(err)
	}
	defer r.Release()
	if !r.Schema().Equal(Schema) {
		return decodeErr("payload schema", ErrSchema, "got %s", r.Schema())
	}
	if !r.Next() {
		if r.Err() != nil {
			return readerErr(r.Err())
		}
		return decodeErr("payload", ErrPayload, "no record batch")
	}
	rec := r.RecordBatch()
	if int(rec.NumRows()) != count {
		return decodeErr("header "+HdrCount, ErrMismatch, "header says %d rows, payload has %d", count, rec.NumRows())
	}
	if err := use(rec); err != nil {
		return err
	}
	if r.Next() {
		return decodeErr("payload", ErrPayload, "more than one record batch")
	}
	if r.Err() != nil {
		return readerErr(r.Err())
	}
	return nil
}

// readerErr classifies an error of the IPC reader. The reader recovers
// panics itself, limitAllocator's included, and wraps them.
func readerErr(err error) error {
	if errors.Is(err, errAllocLimit) {
		return decodeErr("payload", ErrTooLarge, "decoded size exceeds %d bytes", maxDecodedBytes)
	}
	return decodeErr("payload", ErrPayload, "%v", err)
}

func rows(edge schemas.EdgeID, rec arrow.RecordBatch) ([]schemas.Reading, error) {
	n := int(rec.NumRows())
	for i, c := range rec.Columns() {
		if c.Len() != n {
			return nil, decodeErr("column "+Schema.Field(i).Name, ErrPayload, "%d values for %d rows", c.Len(), n)
		}
		if !Schema.Field(i).Nullable && c.NullN() != 0 {
			return nil, decodeErr("column "+Schema.Field(i).Name, ErrPayload, "%d nulls in a required column", c.NullN())
		}
	}
	ts := rec.Column(0).(*array.Timestamp)
	val := rec.Column(3).(*array.Float64)
	dev, err := dictColumn(rec, 1)
	if err != nil {
		return nil, err
	}
	met, err := dictColumn(rec, 2)
	if err != nil {
		return nil, err
	}
	unit, err := dictColumn(rec, 4)
	if err != nil {
		return nil, err
	}
	out := make([]schemas.Reading, n)
	for i := range out {
		r := &out[i]
		r.Region, r.Site, r.Edge = edge.Region, edge.Site, edge.Edge
		r.TS = int64(ts.Value(i))
		r.Value = val.Value(i)
		r.Device = dev.value(i)
		r.Metric = met.value(i)
		r.Unit = unit.value(i)
		if err := r.Validate(); err != nil {
			return nil, &DecodeError{Part: "row " + strconv.Itoa(i), Err: fmt.Errorf("%w: %w", ErrReading, err)}
		}
	}
	return out, nil
}

// dictCol resolves dictionary indices to strings. The strings share the
// dictionary's memory, so a batch of 10,000 rows holds a few dozen words.
// Nothing is sized by the dictionary's length, which is untrusted.
type dictCol struct {
	idx   *array.Int32
	words *array.String
}

func (d dictCol) value(i int) string {
	if d.idx.IsNull(i) {
		return ""
	}
	return d.words.Value(int(d.idx.Value(i)))
}

func dictColumn(rec arrow.RecordBatch, col int) (dictCol, error) {
	name := Schema.Field(col).Name
	d, ok := rec.Column(col).(*array.Dictionary)
	if !ok {
		return dictCol{}, decodeErr("column "+name, ErrSchema, "not dictionary encoded")
	}
	idx, ok := d.Indices().(*array.Int32)
	if !ok {
		return dictCol{}, decodeErr("column "+name, ErrSchema, "indices are %s, want int32", d.Indices().DataType())
	}
	dict, ok := d.Dictionary().(*array.String)
	if !ok {
		return dictCol{}, decodeErr("column "+name, ErrSchema, "dictionary is %s, want utf8", d.Dictionary().DataType())
	}
	for i := 0; i < idx.Len(); i++ {
		if idx.IsValid(i) {
			if v := idx.Value(i); v < 0 || int(v) >= dict.Len() {
				return dictCol{}, decodeErr("column "+name, ErrPayload, "row %d: dictionary index %d out of range [0,%d)", i, v, dict.Len())
			}
		}
	}
	return dictCol{idx: idx, words: dict}, nil
}
