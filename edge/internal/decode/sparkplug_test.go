package decode

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/updraft-io/updraft/edge/internal/decode/sparkplug"
	"github.com/updraft-io/updraft/schemas"
)

// spMetricOpt builds one Sparkplug metric.
func spM(name string, alias uint64, dt sparkplug.DataType, v any) *sparkplug.Payload_Metric {
	m := &sparkplug.Payload_Metric{Datatype: proto.Uint32(uint32(dt))}
	if name != "" {
		m.Name = proto.String(name)
	}
	if alias != 0 {
		m.Alias = proto.Uint64(alias)
	}
	switch v := v.(type) {
	case uint32:
		m.Value = &sparkplug.Payload_Metric_IntValue{IntValue: v}
	case uint64:
		m.Value = &sparkplug.Payload_Metric_LongValue{LongValue: v}
	case float32:
		m.Value = &sparkplug.Payload_Metric_FloatValue{FloatValue: v}
	case float64:
		m.Value = &sparkplug.Payload_Metric_DoubleValue{DoubleValue: v}
	case bool:
		m.Value = &sparkplug.Payload_Metric_BooleanValue{BooleanValue: v}
	case string:
		m.Value = &sparkplug.Payload_Metric_StringValue{StringValue: v}
	}
	return m
}

func spPayload(t testing.TB, seq uint64, ms int64, metrics ...*sparkplug.Payload_Metric) []byte {
	t.Helper()
	b, err := proto.Marshal(&sparkplug.Payload{Timestamp: proto.Uint64(uint64(ms)), Seq: proto.Uint64(seq), Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// spSent is an hour before testNow, in milliseconds.
var spSent = testNow.Add(-time.Hour).UnixMilli()

// spFixtures is a node's life: births, data by alias, a device death.
func spFixtures(t testing.TB) []struct {
	name, topic string
	payload     []byte
} {
	int32Neg := int32(-7)
	return []struct {
		name, topic string
		payload     []byte
	}{
		{"nbirth", "spBv1.0/plant/NBIRTH/gw 1", spPayload(t, 0, spSent,
			spM("bdSeq", 0, sparkplug.DataType_Int64, uint64(3)),
			spM("Node Control/Rebirth", 0, sparkplug.DataType_Boolean, false),
			spM("Properties/Hardware Make", 0, sparkplug.DataType_String, "Acme"),
			spM("Inputs/Supply Voltage", 1, sparkplug.DataType_Double, 24.1))},
		{"dbirth", "spBv1.0/plant/DBIRTH/gw 1/pump.1", spPayload(t, 1, spSent,
			spM("Pressure", 10, sparkplug.DataType_Float, float32(2.5)),
			spM("Offset", 11, sparkplug.DataType_Int32, uint32(int32Neg)),
			spM("Running", 12, sparkplug.DataType_Boolean, true),
			spM("Setpoint", 13, sparkplug.DataType_String, "3.5"))},
		{"ndata", "spBv1.0/plant/NDATA/gw 1", spPayload(t, 2, spSent+1000,
			spM("", 1, sparkplug.DataType_Double, 24.3))},
		{"ddata", "spBv1.0/plant/DDATA/gw 1/pump.1", spPayload(t, 3, spSent+2000,
			spM("", 10, sparkplug.DataType_Float, float32(2.75)),
			spM("", 12, sparkplug.DataType_Boolean, false))},
		{"ddeath", "spBv1.0/plant/DDEATH/gw 1/pump.1", spPayload(t, 4, spSent+3000)},
	}
}

// TestSparkplugFixtures decodes a node's life in order and keeps the
// payloads under testdata/sparkplug as fuzz seeds.
func TestSparkplugFixtures(t *testing.T) {
	d := newTestDecoder(t)
	want := map[string]string{
		"nbirth": "local.lab.edge-1 device=gw_1 metric=Inputs/Supply_Voltage value=24.1 unit=\"\" ts=2024-04-05T11:00:00Z\n",
		"dbirth": "local.lab.edge-1 device=gw_1/pump_1 metric=Pressure value=2.5 unit=\"\" ts=2024-04-05T11:00:00Z\n" +
			"local.lab.edge-1 device=gw_1/pump_1 metric=Offset value=-7 unit=\"\" ts=2024-04-05T11:00:00Z\n" +
			"local.lab.edge-1 device=gw_1/pump_1 metric=Running value=1 unit=\"\" ts=2024-04-05T11:00:00Z\n" +
			"local.lab.edge-1 device=gw_1/pump_1 metric=Setpoint value=3.5 unit=\"\" ts=2024-04-05T11:00:00Z\n",
		"ndata": "local.lab.edge-1 device=gw_1 metric=Inputs/Supply_Voltage value=24.3 unit=\"\" ts=2024-04-05T11:00:01Z\n",
		"ddata": "local.lab.edge-1 device=gw_1/pump_1 metric=Pressure value=2.75 unit=\"\" ts=2024-04-05T11:00:02Z\n" +
			"local.lab.edge-1 device=gw_1/pump_1 metric=Running value=0 unit=\"\" ts=2024-04-05T11:00:02Z\n",
		"ddeath": "no readings\n",
	}
	for _, f := range spFixtures(t) {
		if got := render(d.Decode(nil, f.topic, f.payload)); got != want[f.name] {
			t.Errorf("%s:\n got %s\nwant %s", f.name, got, want[f.name])
		}
		file := filepath.Join("testdata", "sparkplug", f.name+".bin")
		if *update {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, append([]byte(f.topic+"\n"), f.payload...), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s := d.SparkplugStats(); s.SeqGaps != 0 || s.NonNumeric != 1 {
		t.Errorf("stats %+v, want no gaps and 1 non-numeric (the hardware make)", s)
	}
	if online, known := d.SparkplugOnline("plant/gw 1/pump.1"); online || !known {
		t.Errorf("device after DDEATH: online %v known %v", online, known)
	}
	if online, _ := d.SparkplugOnline("plant/gw 1"); !online {
		t.Error("node went offline with its device")
	}
}

func TestSparkplugSequenceAndRebirth(t *testing.T) {
	cfg := testConfig()
	var cmds []Command
	cfg.OnCommand = func(c Command) { cmds = append(cmds, c) }
	d, err := New(cfg, testEdge, func() time.Time { return testNow })
	if err != nil {
		t.Fatal(err)
	}
	const node = "spBv1.0/g/NBIRTH/n1"
	decode := func(topic string, payload []byte) ([]schemas.Reading, Reason) {
		t.Helper()
		out, err := d.Decode(nil, topic, payload)
		var rej *Reject
		if errors.As(err, &rej) {
			return out, rej.Reason
		}
		if err != nil {
			t.Fatal(err)
		}
		return out, ""
	}
	// Data before any birth: rejected, and a rebirth is requested.
	if _, r := decode("spBv1.0/g/NDATA/n1", spPayload(t, 5, spSent, spM("", 1, sparkplug.DataType_Double, 1.0))); r != ReasonUnknownAlias {
		t.Fatalf("NDATA before NBIRTH: %q", r)
	}
	if _, r := decode("spBv1.0/g/DDATA/n1/d1", spPayload(t, 6, spSent, spM("", 1, sparkplug.DataType_Double, 1.0))); r != ReasonUnknownAlias {
		t.Fatalf("DDATA before NBIRTH: %q", r)
	}
	if len(cmds) != 1 || cmds[0].Topic != "spBv1.0/g/NCMD/n1" {
		t.Fatalf("commands %+v, want one NCMD to n1", cmds)
	}
	var p sparkplug.Payload
	if err := proto.Unmarshal(cmds[0].Payload, &p); err != nil || p.GetMetrics()[0].GetName() != SparkplugRebirthMetric || !p.GetMetrics()[0].GetBooleanValue() {
		t.Fatalf("rebirth payload %v: %v", &p, err)
	}
	birth := spPayload(t, 254, spSent, spM("bdSeq", 0, sparkplug.DataType_UInt64, uint64(1)), spM("t", 1, sparkplug.DataType_Double, 1.0))
	if rs, r := decode(node, birth); r != "" || len(rs) != 1 {
		t.Fatalf("NBIRTH: %d readings, %q", len(rs), r)
	}
	// 254 -> 255 -> 0 wraps without a gap.
	for _, seq := range []uint64{255, 0, 1} {
		if _, r := decode("spBv1.0/g/NDATA/n1", spPayload(t, seq, spSent, spM("", 1, sparkplug.DataType_Double, 2.0))); r != "" {
			t.Fatalf("seq %d: %q", seq, r)
		}
	}
	if g := d.SparkplugStats().SeqGaps; g != 0 {
		t.Fatalf("%d gaps across the wrap", g)
	}
	// 1 -> 5 is a gap: counted, a rebirth asked once, the data still kept.
	for _, seq := range []uint64{5, 9} {
		if rs, r := decode("spBv1.0/g/NDATA/n1", spPayload(t, seq, spSent, spM("", 1, sparkplug.DataType_Double, 3.0))); r != "" || len(rs) != 1 {
			t.Fatalf("seq %d: %d readings, %q", seq, len(rs), r)
		}
	}
	if s := d.SparkplugStats(); s.SeqGaps != 2 || s.RebirthRequests != 2 || len(cmds) != 2 {
		t.Fatalf("stats %+v, %d commands; want 2 gaps, 2 requests (one before the birth, one after)", s, len(cmds))
	}
	// An alias no birth defined: rejected.
	if _, r := decode("spBv1.0/g/NDATA/n1", spPayload(t, 10, spSent, spM("", 99, sparkplug.DataType_Double, 1.0))); r != ReasonUnknownAlias {
		t.Fatalf("unknown alias: %q", r)
	}
	// A stale NDEATH (another bdSeq) is ignored; the right one kills the node.
	if _, r := decode("spBv1.0/g/NDEATH/n1", spPayload(t, 0, spSent, spM("bdSeq", 0, sparkplug.DataType_UInt64, uint64(0)))); r != "" {
		t.Fatal(r)
	}
	if online, _ := d.SparkplugOnline("g/n1"); !online {
		t.Fatal("a stale NDEATH killed the node")
	}
	if _, r := decode("spBv1.0/g/NDEATH/n1", spPayload(t, 0, spSent, spM("bdSeq", 0, sparkplug.DataType_UInt64, uint64(1)))); r != "" {
		t.Fatal(r)
	}
	if online, known := d.SparkplugOnline("g/n1"); online || !known {
		t.Fatalf("after NDEATH: online %v known %v", online, known)
	}
	if _, r := decode("spBv1.0/g/NDATA/n1", spPayload(t, 11, spSent, spM("", 1, sparkplug.DataType_Double, 1.0))); r != ReasonUnknownAlias {
		t.Fatalf("NDATA after NDEATH: %q", r)
	}
	// Host state and commands carry no readings.
	for _, topic := range []string{"spBv1.0/STATE/host1", "spBv1.0/g/NCMD/n1", "spBv1.0/g/DCMD/n1/d1"} {
		if rs, r := decode(topic, cmds[0].Payload); r != "" || len(rs) != 0 {
			t.Errorf("%s: %d readings, %q", topic, len(rs), r)
		}
	}
}

// FuzzSparkplugWire checks the protowire reader of the data path against
// proto.Unmarshal into the generated types: whatever the generated code
// reads, the wire reader reads the same way. (The wire reader does not
// look inside metadata, properties, datasets or templates, so it accepts
// some payloads whose nested messages the generated code refuses.)
func FuzzSparkplugWire(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "sparkplug", "*.bin"))
	for _, file := range files {
		in, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		_, payload, _ := strings.Cut(string(in), "\n")
		f.Add([]byte(payload))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ref sparkplug.Payload
		refErr := proto.Unmarshal(b, &ref)
		var p spWirePayload
		err := p.parse(b)
		if refErr != nil {
			return
		}
		if err != nil {
			t.Fatalf("generated code reads %x, the wire reader fails: %v", b, err)
		}
		if p.hasTS != (ref.Timestamp != nil) || p.timestamp != ref.GetTimestamp() || p.hasSeq != (ref.Seq != nil) || p.seq != ref.GetSeq() {
			t.Fatalf("header differs: %+v vs %v", p, &ref)
		}
		if len(p.metrics) != len(ref.GetMetrics()) {
			t.Fatalf("%d metrics, generated code %d", len(p.metrics), len(ref.GetMetrics()))
		}
		for i, rm := range ref.GetMetrics() {
			m := &p.metrics[i]
			if m.hasName != (rm.Name != nil) || string(m.name) != rm.GetName() || m.hasAlias != (rm.Alias != nil) || m.alias != rm.GetAlias() ||
				m.hasTS != (rm.Timestamp != nil) || m.timestamp != rm.GetTimestamp() || m.datatype != rm.GetDatatype() || m.null != rm.GetIsNull() {
				t.Fatalf("metric %d differs: %+v vs %v", i, m, rm)
			}
			for dt := uint32(0); dt <= 20; dt++ {
				v, ok := m.float(dt)
				rv, rok := spRefValue(rm, dt)
				if ok != rok || (ok && math.Float64bits(v) != math.Float64bits(rv)) {
					t.Fatalf("metric %d as type %d: %v %v, generated code %v %v", i, dt, v, ok, rv, rok)
				}
			}
		}
	})
}

// spRefValue is spWireMetric.float on the generated types.
func spRefValue(m *sparkplug.Payload_Metric, dt uint32) (float64, bool) {
	if m.GetIsNull() || m.Value == nil {
		return 0, false
	}
	var f float64
	var bits uint64
	switch v := m.Value.(type) {
	case *sparkplug.Payload_Metric_IntValue:
		bits, f = uint64(v.IntValue), float64(v.IntValue)
	case *sparkplug.Payload_Metric_LongValue:
		bits, f = v.LongValue, float64(v.LongValue)
	case *sparkplug.Payload_Metric_BooleanValue:
		if v.BooleanValue {
			bits = 1
		}
	case *sparkplug.Payload_Metric_FloatValue:
		bits, f = uint64(math.Float32bits(v.FloatValue)), float64(v.FloatValue)
	case *sparkplug.Payload_Metric_DoubleValue:
		bits, f = math.Float64bits(v.DoubleValue), v.DoubleValue
	case *sparkplug.Payload_Metric_StringValue:
		if dt != spString && dt != spText {
			return 0, false
		}
		x, kind := parseNumericString([]byte(v.StringValue))
		return x, kind == valueNumber
	default:
		return 0, false
	}
	switch dt {
	case spInt8:
		return float64(int8(bits)), true
	case spInt16:
		return float64(int16(bits)), true
	case spInt32:
		return float64(int32(bits)), true
	case spInt64:
		return float64(int64(bits)), true
	case spUInt8, spUInt16, spUInt32, spUInt64, spDateTime:
		return float64(bits), true
	case spBoolean:
		if bits != 0 {
			return 1, true
		}
		return 0, true
	case spFloat, spDouble:
		return f, !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	return 0, false
}
