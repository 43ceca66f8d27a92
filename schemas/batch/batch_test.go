package batch_test

import (
	"bytes"
	"cmp"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

var testID = batch.ID{Edge: edge, Epoch: 0xdeadbeef, Seq: 42}

func TestMsgID(t *testing.T) {
	if got, want := testID.MsgID(), "local.lab.edge-1:deadbeef:42"; got != want {
		t.Errorf("MsgID() = %q, want %q", got, want)
	}
	if testID.String() != testID.MsgID() {
		t.Errorf("String() = %q", testID.String())
	}
}

func TestRoundTrip(t *testing.T) {
	many := simulatorReadings(3000)
	// Some readings without a unit, so the unit column has nulls.
	for i := range many {
		if i%7 == 0 {
			many[i].Unit = ""
		}
	}
	many[5].Value = math.Copysign(0, -1)
	many[6].Value = math.MaxFloat64
	many[7].Value = -math.SmallestNonzeroFloat64
	many[8].Device = "température-ünït"
	one := many[:1]
	noUnits := slices.Clone(many[:10])
	for i := range noUnits {
		noUnits[i].Unit = ""
	}
	// Out of time order within a device and metric, as after a clock step.
	shuffled := slices.Clone(many)
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	// Too many (device, metric) pairs for a table of counts.
	pairs := slices.Clone(many[:2000])
	for i := range pairs {
		pairs[i].Device = "dev-" + strconv.Itoa(rng.IntN(1500))
		pairs[i].Metric = "m-" + strconv.Itoa(rng.IntN(1500))
		pairs[i].TS = many[0].TS + int64(rng.IntN(4))
	}
	// Rows equal but for their values keep their input order.
	ties := slices.Clone(many[:40])
	for i := range ties {
		ties[i].Device, ties[i].Metric, ties[i].TS = "d-"+strconv.Itoa(i%2), "m", 7
		ties[i].Value = float64(i)
	}
	tests := []struct {
		name     string
		kind     string
		replay   bool
		readings []schemas.Reading
	}{
		{"one reading", schemas.KindRaw, false, one},
		{"50 devices, some units null", schemas.KindRaw, false, many},
		{"all units null", schemas.KindRaw, false, noUnits},
		{"aggregates replayed", schemas.KindAgg, true, many[:300]},
		{"default kind", "", false, many[:30]},
		{"shuffled", schemas.KindRaw, false, shuffled},
		{"2000 readings, ~2000 device-metric pairs", schemas.KindRaw, false, pairs},
		{"equal but for values", schemas.KindRaw, false, ties},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.readings)
			msg, err := batch.Encode(testID, tt.kind, tt.replay, in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(in, tt.readings) {
				t.Error("Encode changed its input")
			}
			kind := cmp.Or(tt.kind, schemas.KindRaw)
			if want := schemas.TelemetrySubject(edge, kind); msg.Subject != want {
				t.Errorf("subject %q, want %q", msg.Subject, want)
			}
			got, err := batch.Decode(msg.Subject, msg.Header, msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != testID || got.Kind != kind || got.Replay != tt.replay {
				t.Errorf("decoded id %+v kind %q replay %v", got.ID, got.Kind, got.Replay)
			}
			lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
			for _, r := range in {
				lo, hi = min(lo, r.TS), max(hi, r.TS)
			}
			if got.MinTS != lo || got.MaxTS != hi {
				t.Errorf("time range [%d,%d], want [%d,%d]", got.MinTS, got.MaxTS, lo, hi)
			}
			// Rows are ordered by device, metric and time; equal ones keep
			// their input order.
			want := slices.Clone(in)
			slices.SortStableFunc(want, func(a, b schemas.Reading) int {
				return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.TS, b.TS))
			})
			if len(got.Readings) != len(want) {
				t.Fatalf("%d readings, want %d", len(got.Readings), len(want))
			}
			for i, r := range got.Readings {
				w := want[i]
				if math.Float64bits(r.Value) != math.Float64bits(w.Value) {
					t.Fatalf("row %d: value %v, want %v", i, r.Value, w.Value)
				}
				r.Value, w.Value = 0, 0
				if r != w {
					t.Fatalf("row %d: got %+v, want %+v", i, r, w)
				}
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	rs := simulatorReadings(9)
	msg, err := batch.Encode(testID, schemas.KindRaw, false, rs)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := rs[0].TS, rs[0].TS
	for _, r := range rs {
		lo, hi = min(lo, r.TS), max(hi, r.TS)
	}
	want := map[string]string{
		batch.HdrSchema: "1",
		batch.HdrEdge:   "local.lab.edge-1",
		batch.HdrEpoch:  "deadbeef",
		batch.HdrSeq:    "42",
		batch.HdrCount:  "9",
		batch.HdrMinTS:  strconv.FormatInt(lo, 10),
		batch.HdrMaxTS:  strconv.FormatInt(hi, 10),
		batch.HdrKind:   "raw",
		batch.HdrMsgID:  "local.lab.edge-1:deadbeef:42",
	}
	for k, v := range want {
		if got := msg.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if _, ok := msg.Header[batch.HdrReplay]; ok {
		t.Errorf("a live batch carries %s", batch.HdrReplay)
	}
	replayed, err := batch.Encode(testID, schemas.KindRaw, true, rs)
	if err != nil {
		t.Fatal(err)
	}
	if got := replayed.Header.Get(batch.HdrReplay); got != "1" {
		t.Errorf("%s = %q, want 1", batch.HdrReplay, got)
	}
}

func TestEncodeErrors(t *testing.T) {
	if _, err := batch.Encode(testID, schemas.KindRaw, false, nil); err == nil {
		t.Error("Encode of no readings succeeded")
	}
	rs := simulatorReadings(3)
	rs[2].Site = "plant"
	if _, err := batch.Encode(testID, schemas.KindRaw, false, rs); err == nil || !strings.Contains(err.Error(), "plant") {
		t.Errorf("Encode of another site's reading: %v", err)
	}
}

// ipcStream writes records as one Arrow IPC stream with the batch options.
func ipcStream(t testing.TB, schema *arrow.Schema, recs ...arrow.RecordBatch) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema), ipc.WithZstd())
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// record builds a batch.Schema record from columns; devIdx lets a test put
// any index into the device column.
func record(t testing.TB, ts []int64, devIdx []int32, devWords []string, values []float64, valid []bool) arrow.RecordBatch {
	t.Helper()
	mem := memory.DefaultAllocator
	dictType := batch.Schema.Field(1).Type.(*arrow.DictionaryType)
	tsb := array.NewTimestampBuilder(mem, batch.Schema.Field(0).Type.(*arrow.TimestampType))
	for _, v := range ts {
		tsb.Append(arrow.Timestamp(v))
	}
	idx := array.NewInt32Builder(mem)
	idx.AppendValues(devIdx, valid)
	words := array.NewStringBuilder(mem)
	words.AppendValues(devWords, nil)
	idxArr, wordArr := idx.NewArray(), words.NewArray()
	dev := array.NewDictionaryArray(dictType, idxArr, wordArr)
	metIdx := array.NewInt32Builder(mem)
	metIdx.AppendValues(make([]int32, len(ts)), nil)
	metWords := array.NewStringBuilder(mem)
	metWords.Append("temperature")
	metIdxArr, metWordArr := metIdx.NewArray(), metWords.NewArray()
	met := array.NewDictionaryArray(dictType, metIdxArr, metWordArr)
	vb := array.NewFloat64Builder(mem)
	vb.AppendValues(values, nil)
	unitIdx := array.NewInt32Builder(mem)
	unitIdx.AppendNulls(len(ts))
	unitWords := array.NewStringBuilder(mem)
	unitIdxArr, unitWordArr := unitIdx.NewArray(), unitWords.NewArray()
	unit := array.NewDictionaryArray(dictType, unitIdxArr, unitWordArr)
	cols := []arrow.Array{tsb.NewArray(), dev, met, vb.NewArray(), unit}
	rec := array.NewRecordBatch(batch.Schema, cols, int64(len(ts)))
	for _, a := range append(cols, idxArr, wordArr, metIdxArr, metWordArr, unitIdxArr, unitWordArr) {
		a.Release()
	}
	return rec
}

// withPayload returns msg's headers adjusted to data holding n rows over
// [lo,hi].
func withPayload(msg *batch.Message, n int, lo, hi int64) nats.Header {
	h := nats.Header{}
	for k, v := range msg.Header {
		h[k] = slices.Clone(v)
	}
	h.Set(batch.HdrCount, strconv.Itoa(n))
	h.Set(batch.HdrMinTS, strconv.FormatInt(lo, 10))
	h.Set(batch.HdrMaxTS, strconv.FormatInt(hi, 10))
	return h
}

func TestDecodeErrors(t *testing.T) {
	rs := simulatorReadings(30)
	good, err := batch.Encode(testID, schemas.KindRaw, false, rs)
	if err != nil {
		t.Fatal(err)
	}
	encode := func(change func([]schemas.Reading)) *batch.Message {
		c := slices.Clone(rs)
		change(c)
		m, err := batch.Encode(testID, schemas.KindRaw, false, c)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	header := func(change func(nats.Header)) nats.Header {
		h := nats.Header{}
		for k, v := range good.Header {
			h[k] = slices.Clone(v)
		}
		change(h)
		return h
	}
	const ts0 = 1712314800000000000
	type tcase struct {
		name    string
		subject string
		header  nats.Header
		data    []byte
		want    []error
		part    string
	}
	tests := []tcase{
		{"no headers", "", nats.Header{}, good.Data, []error{batch.ErrHeader}, "header " + batch.HdrSchema},
		{"schema version", "", header(func(h nats.Header) { h.Set(batch.HdrSchema, "2") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrSchema},
		{"schema not a number", "", header(func(h nats.Header) { h.Set(batch.HdrSchema, "v1") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrSchema},
		{"edge missing", "", header(func(h nats.Header) { h.Del(batch.HdrEdge) }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrEdge},
		{"edge malformed", "", header(func(h nats.Header) { h.Set(batch.HdrEdge, "local.lab") }), good.Data, []error{batch.ErrHeader, schemas.ErrBadToken}, "header " + batch.HdrEdge},
		{"epoch not hex", "", header(func(h nats.Header) { h.Set(batch.HdrEpoch, "xyz") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrEpoch},
		{"seq negative", "", header(func(h nats.Header) { h.Set(batch.HdrSeq, "-1") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrSeq},
		{"two seq values", "", header(func(h nats.Header) { h.Add(batch.HdrSeq, "43") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrSeq},
		{"empty count", "", header(func(h nats.Header) { h.Set(batch.HdrCount, "") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrCount},
		{"zero count", "", header(func(h nats.Header) { h.Set(batch.HdrCount, "0") }), good.Data, []error{batch.ErrTooLarge}, "header " + batch.HdrCount},
		{"count above the limit", "", header(func(h nats.Header) { h.Set(batch.HdrCount, strconv.Itoa(batch.MaxRows+1)) }), good.Data, []error{batch.ErrTooLarge}, "header " + batch.HdrCount},
		{"count mismatch", "", header(func(h nats.Header) { h.Set(batch.HdrCount, "31") }), good.Data, []error{batch.ErrMismatch}, "header " + batch.HdrCount},
		{"min not a number", "", header(func(h nats.Header) { h.Set(batch.HdrMinTS, "soon") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrMinTS},
		{"min after max", "", header(func(h nats.Header) { h.Set(batch.HdrMinTS, "2"); h.Set(batch.HdrMaxTS, "1") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrMinTS},
		{"min mismatch", "", header(func(h nats.Header) { h.Set(batch.HdrMinTS, "1") }), good.Data, []error{batch.ErrMismatch}, "header " + batch.HdrMinTS},
		{"max mismatch", "", header(func(h nats.Header) { h.Set(batch.HdrMaxTS, strconv.FormatInt(math.MaxInt64, 10)) }), good.Data, []error{batch.ErrMismatch}, "header " + batch.HdrMinTS},
		{"kind", "", header(func(h nats.Header) { h.Set(batch.HdrKind, "cooked") }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrKind},
		{"msg id missing", "", header(func(h nats.Header) { h.Del(batch.HdrMsgID) }), good.Data, []error{batch.ErrHeader}, "header " + batch.HdrMsgID},
		{"msg id mismatch", "", header(func(h nats.Header) { h.Set(batch.HdrMsgID, "local.lab.edge-1:deadbeef:41") }), good.Data, []error{batch.ErrMismatch}, "header " + batch.HdrMsgID},
		{"subject of another edge", "telemetry.local.lab.edge-2.raw", good.Header, good.Data, []error{batch.ErrMismatch}, "subject"},
		{"subject of another kind", "telemetry.local.lab.edge-1.agg", good.Header, good.Data, []error{batch.ErrMismatch}, "subject"},
		{"empty payload", "", good.Header, nil, []error{batch.ErrPayload}, "payload"},
		{"truncated payload", "", good.Header, good.Data[:len(good.Data)/2], []error{batch.ErrPayload}, "payload"},
		{"truncated schema", "", good.Header, good.Data[:20], []error{batch.ErrPayload}, "payload"},
		{"garbage", "", good.Header, bytes.Repeat([]byte("updraft!"), 100), []error{batch.ErrPayload}, "payload"},
		{"payload too large", "", good.Header, make([]byte, batch.MaxPayloadBytes+1), []error{batch.ErrTooLarge}, "payload"},
	}

	nan := encode(func(c []schemas.Reading) { c[3].Value = math.NaN() })
	tests = append(tests, tcase{"NaN in payload", "", nan.Header, nan.Data, []error{batch.ErrReading, schemas.ErrNonFinite}, "row"})
	inf := encode(func(c []schemas.Reading) { c[0].Value = math.Inf(-1) })
	tests = append(tests, tcase{"-Inf in payload", "", inf.Header, inf.Data, []error{batch.ErrReading, schemas.ErrNonFinite}, "row"})
	dotted := encode(func(c []schemas.Reading) { c[4].Device = "sim.0001" })
	tests = append(tests, tcase{"bad token in dictionary", "", dotted.Header, dotted.Data, []error{batch.ErrReading, schemas.ErrBadToken}, "row"})
	zeroTS := encode(func(c []schemas.Reading) { c[4].TS = 0 })
	tests = append(tests, tcase{"zero timestamp", "", zeroTS.Header, zeroTS.Data, []error{batch.ErrReading, schemas.ErrBadTimestamp}, "row"})

	rec := record(t, []int64{ts0, ts0 + 1}, []int32{0, 5}, []string{"d1"}, []float64{1, 2}, nil)
	tests = append(tests, tcase{"dictionary index out of range", "", withPayload(good, 2, ts0, ts0+1), ipcStream(t, batch.Schema, rec),
		[]error{batch.ErrPayload}, "column device"})
	neg := record(t, []int64{ts0}, []int32{-1}, []string{"d1"}, []float64{1}, nil)
	tests = append(tests, tcase{"negative dictionary index", "", withPayload(good, 1, ts0, ts0), ipcStream(t, batch.Schema, neg),
		[]error{batch.ErrPayload}, "column device"})
	nullDev := record(t, []int64{ts0, ts0}, []int32{0, 0}, []string{"d1"}, []float64{1, 2}, []bool{true, false})
	tests = append(tests, tcase{"null in a required column", "", withPayload(good, 2, ts0, ts0), ipcStream(t, batch.Schema, nullDev),
		[]error{batch.ErrPayload}, "column device"})
	ok1 := record(t, []int64{ts0}, []int32{0}, []string{"d1"}, []float64{1}, nil)
	tests = append(tests, tcase{"two record batches", "", withPayload(good, 1, ts0, ts0), ipcStream(t, batch.Schema, ok1, ok1),
		[]error{batch.ErrPayload}, "payload"})
	tests = append(tests, tcase{"no record batch", "", withPayload(good, 1, ts0, ts0), ipcStream(t, batch.Schema),
		[]error{batch.ErrPayload}, "payload"})
	for _, r := range []arrow.RecordBatch{rec, neg, nullDev, ok1} {
		r.Release()
	}

	// A schema whose value column is float32.
	fields := slices.Clone(batch.Schema.Fields())
	fields[3] = arrow.Field{Name: "value", Type: arrow.PrimitiveTypes.Float32}
	other := arrow.NewSchema(fields, nil)
	tests = append(tests, tcase{"wrong schema", "", good.Header, ipcStream(t, other), []error{batch.ErrSchema}, "payload schema"})
	// Same columns, but the unit column declared non-nullable.
	fields = slices.Clone(batch.Schema.Fields())
	fields[4].Nullable = false
	tests = append(tests, tcase{"wrong nullability", "", good.Header, ipcStream(t, arrow.NewSchema(fields, nil)), []error{batch.ErrSchema}, "payload schema"})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := batch.Decode(tt.subject, tt.header, tt.data)
			if err == nil {
				t.Fatalf("Decode succeeded with %d readings", len(got.Readings))
			}
			t.Log(err)
			var derr *batch.DecodeError
			if !errors.As(err, &derr) {
				t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("error %v is not %v", err, w)
				}
			}
			if !strings.HasPrefix(derr.Part, tt.part) {
				t.Errorf("part %q, want %q (error: %v)", derr.Part, tt.part, err)
			}
			if !strings.Contains(err.Error(), derr.Part) {
				t.Errorf("message %q does not name the part", err)
			}
		})
	}
}

func TestDecodeWithoutSubject(t *testing.T) {
	msg, err := batch.Encode(testID, schemas.KindAgg, false, simulatorReadings(5))
	if err != nil {
		t.Fatal(err)
	}
	b, err := batch.Decode("", msg.Header, msg.Data)
	if err != nil || b.Kind != schemas.KindAgg {
		t.Fatalf("Decode without a subject: %+v, %v", b, err)
	}
}
