package decode

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"unicode/utf8"
)

const (
	fuzzFlatTopic   = "devices/d1/telemetry"
	fuzzMetricTopic = "sites/lab/devices/d1/metrics/temperature"
)

// FuzzDecodeJSON checks that Decode never panics, that whatever it accepts
// is a valid reading, and that it agrees with an encoding/json based
// implementation of the same rules: the two accept the same messages and
// produce the same readings, except that the scanner also refuses invalid
// UTF-8 and very deep nesting, which encoding/json lets through.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		simulatorPayload, `{}`, `{"a":1}`, `{"a":"1.5"}`, `{"a":true,"b":false}`, `{"ts":"2024-04-05T11:00:00Z","a":1}`,
		`{"ts":1712314800000.5,"a":-0}`, `{"ts":1.7e12,"a":1e308}`, `{"a":1e400}`, `{"a":"NaN"}`, `{"a":null}`,
		`{"a":[1,{"b":[]}]}`, `{"a\u002e":1}`, `{"\ud83d\ude00":1}`, `{"a":1,"a":2}`, `[1]`, `1`, `"1"`, `null`,
		`{"value":1,"time":1712314800.5}`, `{"value":"x"}`, "{\"a\xff\":1}", `{"a":1}x`, ` { "a" : 1 } `,
	} {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	d := newTestDecoder(f)
	sub := d.subs[0]
	msub := d.subs[1]
	f.Fuzz(func(t *testing.T, perMetric bool, payload []byte) {
		topic, tsField, mult, metric := fuzzFlatTopic, sub.tsField, sub.tsMult, ""
		if perMetric {
			topic, tsField, mult, metric = fuzzMetricTopic, msub.tsField, msub.tsMult, "temperature"
		}
		out, err := d.Decode(nil, topic, payload)
		want, refOK := refDecode(payload, tsField, mult, metric, testNow, testConfig().MaxClockSkew)
		if err != nil {
			var rej *Reject
			if !errors.As(err, &rej) {
				t.Fatalf("error is not a *Reject: %v", err)
			}
			if len(out) != 0 {
				t.Fatalf("reject %v returned %d readings", err, len(out))
			}
			if refOK && utf8.Valid(payload) && !tooDeep(payload) {
				t.Fatalf("rejected %q (%v), encoding/json accepts it as %+v", payload, err, want)
			}
			if !json.Valid(payload) && len(payload) <= d.maxPayload && rej.Reason != ReasonMalformedJSON {
				t.Fatalf("invalid JSON %q rejected as %s, want %s", payload, rej.Reason, ReasonMalformedJSON)
			}
			return
		}
		if !refOK {
			t.Fatalf("accepted %q as %+v, encoding/json rules reject it", payload, out)
		}
		if len(out) != len(want) {
			t.Fatalf("%q: %d readings, encoding/json gives %d", payload, len(out), len(want))
		}
		for i, r := range out {
			if err := r.Validate(); err != nil {
				t.Fatalf("%q: accepted reading %+v fails validation: %v", payload, r, err)
			}
			w := want[i]
			if r.Metric != w.metric || math.Float64bits(r.Value) != math.Float64bits(w.value) || r.TS != w.ts {
				t.Fatalf("%q: reading %d is %s=%v@%d, encoding/json gives %s=%v@%d", payload, i, r.Metric, r.Value, r.TS, w.metric, w.value, w.ts)
			}
			if r.Region != testEdge.Region || r.Site != testEdge.Site || r.Edge != testEdge.Edge || r.Device != "d1" {
				t.Fatalf("reading %+v has the wrong identity", r)
			}
		}
	})
}

// tooDeep reports nesting beyond what the scanner follows.
func tooDeep(b []byte) bool {
	depth := 0
	inStr := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case !inStr && (c == '[' || c == '{'):
			if depth++; depth > maxDepth {
				return true
			}
		case !inStr && (c == ']' || c == '}'):
			depth--
		}
	}
	return false
}
