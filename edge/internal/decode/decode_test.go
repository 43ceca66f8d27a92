package decode

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/updraft-io/updraft/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

var (
	testEdge = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}
	// testNow is 2024-04-05T12:00:00Z, an hour after the timestamps the
	// cases send.
	testNow = time.Date(2024, 4, 5, 12, 0, 0, 0, time.UTC)
)

// testConfig has one subscription of each shape: the simulator's flat
// objects, a metric-per-topic template with a {site} level and second
// timestamps, and a fixed device with RFC 3339 timestamps only.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Subscriptions = append(cfg.Subscriptions,
		Subscription{
			Topic:          "sites/+/devices/+/metrics/+",
			Template:       "sites/{site}/devices/{device}/metrics/{metric}",
			TimestampField: "time",
			TimestampUnit:  UnitSeconds,
			Units:          map[string]string{"temperature": "Cel"},
		},
		Subscription{Topic: "meter/#", Template: "meter/main", Device: "meter-1", TimestampUnit: UnitRFC3339},
		Subscription{Topic: "nested/+/telemetry", Template: "nested/{device}/telemetry", Separator: "_", Arrays: true,
			Units: map[string]string{"env_temperature": "Cel"}},
		Subscription{Topic: "senml/+", Template: "senml/{device}", Format: FormatSenML},
		Subscription{Topic: "senml-base", Template: "senml-base", Format: FormatSenML},
		Subscription{Topic: "tele/+/SENSOR", Template: "tele/{device}/SENSOR", Format: FormatTasmota},
		Subscription{Topic: "zigbee2mqtt/#", Template: "zigbee2mqtt/{device}", Format: FormatZigbee2MQTT,
			Units: map[string]string{"temperature": "Cel", "humidity": "%RH", "local_temperature": "Cel"}},
		Subscription{Topic: "homie/5/#", Template: "homie/5/{device}/{metric}", Format: FormatHomie},
		Subscription{Topic: "plain/+/+", Template: "plain/{device}/{metric}", Format: FormatNumeric},
		Subscription{Topic: "spBv1.0/#", Format: FormatSparkplug, Rebirth: true},
		Subscription{Topic: "ignoring/+", Template: "ignoring/{device}", Ignore: []string{"status"}},
	)
	return cfg
}

func newTestDecoder(t testing.TB) *Decoder {
	t.Helper()
	d, err := New(testConfig(), testEdge, func() time.Time { return testNow })
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestGolden decodes every testdata/golden/*.txt (first line the topic, the
// rest the payload) and compares the result with the .golden file beside it.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			topic, payload, _ := strings.Cut(string(in), "\n")
			payload = strings.TrimSuffix(payload, "\n")
			got := render(newTestDecoder(t).Decode(nil, topic, []byte(payload)))
			golden := strings.TrimSuffix(file, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("decode %s:\n got:\n%s\nwant:\n%s", file, got, want)
			}
		})
	}
}

func render(rs []schemas.Reading, err error) string {
	var b strings.Builder
	if err != nil {
		var rej *Reject
		if !errors.As(err, &rej) {
			return "error (not a *Reject): " + err.Error() + "\n"
		}
		fmt.Fprintf(&b, "reject %s: %s\n", rej.Reason, rej.Detail)
		return b.String()
	}
	if len(rs) == 0 {
		return "no readings\n"
	}
	for _, r := range rs {
		fmt.Fprintf(&b, "%s.%s.%s device=%s metric=%s value=%s unit=%q ts=%s\n", r.Region, r.Site, r.Edge,
			r.Device, r.Metric, strconv.FormatFloat(r.Value, 'g', -1, 64), r.Unit, r.Time().Format(time.RFC3339Nano))
	}
	return b.String()
}

func TestRejects(t *testing.T) {
	const flat = "devices/d1/telemetry"
	const perMetric = "sites/lab/devices/d1/metrics/temperature"
	big := `{"a":` + strings.Repeat(" ", 256<<10) + `1}`
	deep := strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)
	tests := []struct {
		name, topic, payload string
		want                 Reason
	}{
		{"no template matches", "devices/d1/status", `{"a":1}`, ReasonUnmatchedTopic},
		{"too few levels", "devices/d1", `{"a":1}`, ReasonUnmatchedTopic},
		{"too many levels", "devices/d1/telemetry/x", `{"a":1}`, ReasonUnmatchedTopic},
		{"other site", "sites/plant/devices/d1/metrics/temperature", `1`, ReasonUnmatchedTopic},
		{"oversized", flat, big, ReasonOversized},
		{"empty payload", flat, ``, ReasonMalformedJSON},
		{"blank payload", flat, " \n", ReasonMalformedJSON},
		{"truncated", flat, `{"a":1`, ReasonMalformedJSON},
		{"missing colon", flat, `{"a" 1}`, ReasonMalformedJSON},
		{"trailing comma", flat, `{"a":1,}`, ReasonMalformedJSON},
		{"single quotes", flat, `{'a':1}`, ReasonMalformedJSON},
		{"trailing data", flat, `{"a":1} {"b":2}`, ReasonMalformedJSON},
		{"leading plus", flat, `{"a":+1}`, ReasonMalformedJSON},
		{"leading zero", flat, `{"a":01}`, ReasonMalformedJSON},
		{"bare NaN", flat, `{"a":NaN}`, ReasonMalformedJSON},
		{"bad escape", flat, `{"a\x":1}`, ReasonMalformedJSON},
		{"control char in string", flat, "{\"a\tb\":1}", ReasonMalformedJSON},
		{"invalid utf-8", flat, "{\"a\xff\":1}", ReasonMalformedJSON},
		{"nested too deep", flat, `{"a":` + deep + `}`, ReasonMalformedJSON},
		{"duplicate metric", flat, `{"a":1,"b":2,"a":3}`, ReasonMalformedJSON},
		{"duplicate metric escaped", flat, `{"a":1,"\u0061":3}`, ReasonMalformedJSON},
		{"duplicate timestamp", flat, `{"ts":1712314800000,"a":1,"ts":1712314800000}`, ReasonMalformedJSON},
		{"duplicate value", perMetric, `{"value":1,"value":2}`, ReasonMalformedJSON},
		{"syntax error wins over bad field", flat, `{"a":"x","b":}`, ReasonMalformedJSON},
		{"array", flat, `[1,2]`, ReasonNotAnObject},
		{"number for flat", flat, `21.5`, ReasonNotAnObject},
		{"string for flat", flat, `"21.5"`, ReasonNotAnObject},
		{"null for flat", flat, `null`, ReasonNotAnObject},
		{"text", flat, `"hello"`, ReasonNotAnObject},
		{"string field", flat, `{"a":1,"status":"ok"}`, ReasonNonNumeric},
		{"null field", flat, `{"a":null}`, ReasonNonNumeric},
		{"array field", flat, `{"a":[1]}`, ReasonNonNumeric},
		{"object field", flat, `{"a":{"b":1}}`, ReasonNonNumeric},
		{"number with spaces", flat, `{"a":" 1"}`, ReasonNonNumeric},
		{"hex string", flat, `{"a":"0x10"}`, ReasonNonNumeric},
		{"bare string for metric", perMetric, `"warm"`, ReasonNonNumeric},
		{"null for metric", perMetric, `null`, ReasonNonNumeric},
		{"array for metric", perMetric, `[1]`, ReasonNonNumeric},
		{"string value", perMetric, `{"value":"warm"}`, ReasonNonNumeric},
		{"overflow", flat, `{"a":1e400}`, ReasonNonFinite},
		{"negative overflow", flat, `{"a":-1e309}`, ReasonNonFinite},
		{"NaN string", flat, `{"a":"NaN"}`, ReasonNonFinite},
		{"Infinity string", flat, `{"a":"-Infinity"}`, ReasonNonFinite},
		{"overflow in string", flat, `{"a":"1e999"}`, ReasonNonFinite},
		{"overflow for metric", perMetric, `1e999`, ReasonNonFinite},
		{"zero", flat, `{"ts":0,"a":1}`, ReasonBadTimestamp},
		{"negative", flat, `{"ts":-5,"a":1}`, ReasonBadTimestamp},
		{"beyond 2262", flat, `{"ts":9300000000000,"a":1}`, ReasonBadTimestamp},
		{"huge integer", flat, `{"ts":123456789012345678901234567890,"a":1}`, ReasonBadTimestamp},
		{"huge exponent", flat, `{"ts":1e300,"a":1}`, ReasonBadTimestamp},
		{"not RFC 3339", flat, `{"ts":"yesterday","a":1}`, ReasonBadTimestamp},
		{"RFC 3339 before 1970", flat, `{"ts":"1969-12-31T23:59:59Z","a":1}`, ReasonBadTimestamp},
		{"boolean", flat, `{"ts":true,"a":1}`, ReasonBadTimestamp},
		{"null", flat, `{"ts":null,"a":1}`, ReasonBadTimestamp},
		{"object", flat, `{"ts":{},"a":1}`, ReasonBadTimestamp},
		{"number where rfc3339 is configured", "meter/main", `{"ts":1712314800000,"p":1}`, ReasonBadTimestamp},
		{"ms beyond skew", flat, fmt.Sprintf(`{"ts":%d,"a":1}`, testNow.Add(6*time.Minute).UnixMilli()), ReasonFutureTimestamp},
		{"us sent to ms", flat, fmt.Sprintf(`{"ts":%d,"a":1}`, testNow.UnixMicro()), ReasonBadTimestamp},
		{"RFC 3339 in the future", flat, `{"ts":"2030-01-01T00:00:00Z","a":1}`, ReasonFutureTimestamp},
		{"seconds in the future", perMetric, `{"value":1,"time":1912318400}`, ReasonFutureTimestamp},
		{"dot in metric", flat, `{"temp.c":1}`, ReasonBadToken},
		{"space in metric", flat, `{"temp c":1}`, ReasonBadToken},
		{"wildcard in metric", flat, `{"a*":1}`, ReasonBadToken},
		{"empty metric", flat, `{"":1}`, ReasonBadToken},
		{"control char in metric", flat, `{"a\u0000":1}`, ReasonBadToken},
		{"long metric", flat, `{"` + strings.Repeat("m", schemas.MaxTokenLen+1) + `":1}`, ReasonBadToken},
		{"lone surrogate is fine but dot is not", flat, `{"\ud800.x":1}`, ReasonBadToken},
		{"wildcard device", "devices/d>/telemetry", `{"a":1}`, ReasonBadToken},
		{"empty device", "devices//telemetry", `{"a":1}`, ReasonBadToken},
		{"invalid utf-8 device", "devices/d\xff/telemetry", `{"a":1}`, ReasonBadToken},
		{"bad metric level", "sites/lab/devices/d1/metrics/a b", `1`, ReasonBadToken},
		{"empty object", flat, `{}`, ReasonNoReadings},
		{"only a timestamp", flat, `{"ts":1712314800000}`, ReasonNoReadings},
		{"no value field", perMetric, `{"time":1712314800,"unit":"Cel"}`, ReasonNoReadings},
		{"senml no name", "senml/d1", `[{"v":1}]`, ReasonBadRecord},
		{"senml two values", "senml/d1", `[{"n":"a","v":1,"vb":true}]`, ReasonBadRecord},
		{"senml name without value", "senml/d1", `[{"n":"a"}]`, ReasonBadRecord},
		{"senml must understand", "senml/d1", `[{"n":"a","v":1,"x_":1}]`, ReasonBadRecord},
		{"senml no base name for device", "senml-base", `[{"n":"a","v":1}]`, ReasonBadRecord},
		{"senml string value", "senml/d1", `[{"n":"a","vs":"on"}]`, ReasonNonNumeric},
		{"senml data value", "senml/d1", `[{"n":"a","vd":"aGk"}]`, ReasonNonNumeric},
		{"senml future", "senml/d1", `[{"n":"a","v":1,"t":1912314800}]`, ReasonFutureTimestamp},
		{"senml bad syntax", "senml/d1", `[{"n":"a","v":1}`, ReasonMalformedJSON},
		{"senml dotted name", "senml/d1", `[{"n":"a.b","v":1}]`, ReasonBadToken},
		{"senml empty pack", "senml/d1", `[]`, ReasonNoReadings},
		{"nested object without separator", flat, `{"a":{"b":1}}`, ReasonNonNumeric},
		{"nested duplicate after flattening", "nested/d1/telemetry", `{"a_b":1,"a":{"b":2}}`, ReasonMalformedJSON},
		{"nested text", "nested/d1/telemetry", `{"a":{"b":"x"}}`, ReasonNonNumeric},
		{"nested syntax", "nested/d1/telemetry", `{"a":{"b":1}`, ReasonMalformedJSON},
		{"ignored field does not hide a bad one", "ignoring/d1", `{"status":"ok","mode":"auto"}`, ReasonNonNumeric},
		{"tasmota bad time", "tele/t1/SENSOR", `{"Time":"noon","A":{"B":1}}`, ReasonBadTimestamp},
		{"numeric empty", "plain/d1/x", ` `, ReasonNoReadings},
		{"numeric text", "plain/d1/x", `warm`, ReasonNonNumeric},
		{"numeric inf", "plain/d1/x", `1e999`, ReasonNonFinite},
		{"homie text", "homie/5/d1/n/p", `idle`, ReasonNonNumeric},
		{"sparkplug not protobuf", "spBv1.0/g/NBIRTH/n1", "\xff\xff", ReasonMalformedProtobuf},
		{"sparkplug data before birth", "spBv1.0/g/NDATA/unborn", "", ReasonUnknownAlias},
		{"sparkplug bad type", "spBv1.0/g/NFOO/n1", "", ReasonUnmatchedTopic},
		{"sparkplug device on node type", "spBv1.0/g/NDATA/n1/d1", "", ReasonUnmatchedTopic},
	}
	d := newTestDecoder(t)
	seen := map[Reason]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]schemas.Reading, 1, 8)
			dst[0].Device = "kept"
			out, err := d.Decode(dst, tt.topic, []byte(tt.payload))
			var rej *Reject
			if !errors.As(err, &rej) {
				t.Fatalf("Decode(%q, %.80q) = %d readings, err %v; want reject %s", tt.topic, tt.payload, len(out)-1, err, tt.want)
			}
			if rej.Reason != tt.want {
				t.Fatalf("Decode(%q, %.80q): reason %s (%s), want %s", tt.topic, tt.payload, rej.Reason, rej.Detail, tt.want)
			}
			if rej.Detail == "" || !strings.Contains(err.Error(), string(tt.want)) {
				t.Errorf("error %q lacks a detail or the reason", err)
			}
			if len(out) != 1 || out[0].Device != "kept" {
				t.Errorf("a rejected message changed dst: %+v", out)
			}
			seen[rej.Reason] = true
		})
	}
	for _, r := range Reasons() {
		if !seen[r] {
			t.Errorf("no test case rejects with %s", r)
		}
	}
}

func TestAccepts(t *testing.T) {
	const flat = "devices/d1/telemetry"
	sent := time.Date(2024, 4, 5, 11, 0, 0, 0, time.UTC)
	tests := []struct {
		name, topic, payload string
		metric               string
		value                float64
		ts                   int64
	}{
		{"integer", flat, `{"a":42}`, "a", 42, testNow.UnixNano()},
		{"negative zero", flat, `{"a":-0}`, "a", math.Copysign(0, -1), testNow.UnixNano()},
		{"16 digits", flat, `{"a":1234567890123456789}`, "a", 1234567890123456789, testNow.UnixNano()},
		{"exponent", flat, `{"a":-1.5E-3}`, "a", -0.0015, testNow.UnixNano()},
		{"smallest subnormal", flat, `{"a":5e-324}`, "a", 5e-324, testNow.UnixNano()},
		{"underflow to zero", flat, `{"a":1e-400}`, "a", 0, testNow.UnixNano()},
		{"true", flat, `{"a":true}`, "a", 1, testNow.UnixNano()},
		{"false", flat, `{"a":false}`, "a", 0, testNow.UnixNano()},
		{"numeric string", flat, `{"a":"-2.5e1"}`, "a", -25, testNow.UnixNano()},
		{"escaped numeric string", flat, `{"a":"\u0031\u0032"}`, "a", 12, testNow.UnixNano()},
		{"ms", flat, fmt.Sprintf(`{"ts":%d,"a":1}`, sent.UnixMilli()), "a", 1, sent.UnixNano()},
		{"ms fraction", flat, fmt.Sprintf(`{"ts":%d.0000019,"a":1}`, sent.UnixMilli()), "a", 1, sent.UnixNano() + 1},
		{"ms exponent", flat, `{"ts":1.7123148e12,"a":1}`, "a", 1, 1712314800000000000},
		{"rfc3339 with offset", flat, `{"a":1,"ts":"2024-04-05T13:00:00.5+02:00"}`, "a", 1, sent.UnixNano() + 5e8},
		{"timestamp after the values", flat, fmt.Sprintf(`{"a":1,"ts":%d}`, sent.UnixMilli()), "a", 1, sent.UnixNano()},
		{"within skew", flat, fmt.Sprintf(`{"ts":%d,"a":1}`, testNow.Add(5*time.Minute).UnixMilli()), "a", 1, testNow.Add(5 * time.Minute).UnixNano()},
		{"seconds with nanoseconds", "sites/lab/devices/d1/metrics/temperature", `{"time":1712314800.123456789,"value":1}`, "temperature", 1, sent.UnixNano() + 123456789},
		{"digits below a nanosecond dropped", "sites/lab/devices/d1/metrics/temperature", `{"time":1712314800.0000000019,"value":1}`, "temperature", 1, sent.UnixNano() + 1},
		{"extra fields ignored per metric", "sites/lab/devices/d1/metrics/temperature", `{"seq":[1,{"x":null}],"value":1,"note":"ok","note":"dup"}`, "temperature", 1, testNow.UnixNano()},
		{"metric in topic bare bool", "sites/lab/devices/d1/metrics/door", `true`, "door", 1, testNow.UnixNano()},
		{"rfc3339 only", "meter/main", `{"p":1,"ts":"2024-04-05T11:00:00Z"}`, "p", 1, sent.UnixNano()},
		{"ignored text field", "ignoring/d1", `{"status":"ok","a":2}`, "a", 2, testNow.UnixNano()},
		{"non-ASCII metric", flat, `{"température":1}`, "température", 1, testNow.UnixNano()},
		{"lone surrogate becomes U+FFFD", flat, `{"\udc00":1}`, "\ufffd", 1, testNow.UnixNano()},
	}
	d := newTestDecoder(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := d.Decode(nil, tt.topic, []byte(tt.payload))
			if err != nil {
				t.Fatalf("Decode(%q, %q): %v", tt.topic, tt.payload, err)
			}
			if len(out) != 1 {
				t.Fatalf("got %d readings, want 1: %+v", len(out), out)
			}
			r := out[0]
			if r.Metric != tt.metric || math.Float64bits(r.Value) != math.Float64bits(tt.value) || r.TS != tt.ts {
				t.Errorf("got metric %q value %v ts %d, want %q %v %d", r.Metric, r.Value, r.TS, tt.metric, tt.value, tt.ts)
			}
			if err := r.Validate(); err != nil {
				t.Errorf("reading does not validate: %v", err)
			}
		})
	}
}

func TestDecodeAppendsAndInterns(t *testing.T) {
	d := newTestDecoder(t)
	var dst []schemas.Reading
	var err error
	for _, topic := range []string{"devices/d1/telemetry", "devices/d2/telemetry", "devices/d1/telemetry"} {
		if dst, err = d.Decode(dst, topic, []byte(`{"temperature":1,"x":2}`)); err != nil {
			t.Fatal(err)
		}
	}
	if len(dst) != 6 {
		t.Fatalf("got %d readings, want 6", len(dst))
	}
	if dst[0].Unit != "Cel" || dst[1].Unit != "" {
		t.Errorf("units %q %q, want Cel and none", dst[0].Unit, dst[1].Unit)
	}
	if dst[2].Device != "d2" || dst[4].Device != "d1" {
		t.Errorf("devices %q %q", dst[2].Device, dst[4].Device)
	}
	// Interned names share memory, whatever topic string they came from.
	if unsafeData(dst[0].Device) != unsafeData(dst[4].Device) || unsafeData(dst[0].Metric) != unsafeData(dst[4].Metric) {
		t.Error("device and metric names are not interned")
	}
}

func TestDecodeDoesNotKeepPayload(t *testing.T) {
	d := newTestDecoder(t)
	payload := []byte(`{"fresh_metric":1}`)
	out, err := d.Decode(nil, "devices/d1/telemetry", payload)
	if err != nil {
		t.Fatal(err)
	}
	for i := range payload {
		payload[i] = 'x'
	}
	if out[0].Metric != "fresh_metric" {
		t.Errorf("metric %q changed with the payload buffer", out[0].Metric)
	}
}

func TestInternTablesAreBounded(t *testing.T) {
	d := newTestDecoder(t)
	var dst []schemas.Reading
	for i := range maxInternedMetrics + 10 {
		var err error
		dst, err = d.Decode(dst[:0], "devices/d"+strconv.Itoa(i)+"/telemetry", []byte(`{"m`+strconv.Itoa(i)+`":1,"temperature":2}`))
		if err != nil {
			t.Fatal(err)
		}
		if dst[1].Unit != "Cel" {
			t.Fatalf("message %d lost its unit once the table filled", i)
		}
	}
	if n := len(d.subs[0].metrics); n != maxInternedMetrics {
		t.Errorf("%d interned metrics, want the cap %d", n, maxInternedMetrics)
	}
}

func TestAllocations(t *testing.T) {
	d := newTestDecoder(t)
	payload := []byte(simulatorPayload)
	dst := make([]schemas.Reading, 0, 16)
	if _, err := d.Decode(dst, "devices/sim-0001/telemetry", payload); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.Decode(dst[:0], "devices/sim-0001/telemetry", payload); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Decode of a known device allocates %.1f times per message, want 0", allocs)
	}
}

func unsafeData(s string) *byte { return unsafe.StringData(s) }
