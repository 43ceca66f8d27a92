package decode

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// simulatorPayload is what the Updraft simulator publishes once per device
// per interval.
const simulatorPayload = `{"ts":1712314800123,"temperature":21.37,"humidity":45.5,"pressure":1013.21}`

// BenchmarkDecodeJSON compares the scanner with the same rules implemented
// on encoding/json, on the simulator's payload (3 readings per message).
func BenchmarkDecodeJSON(b *testing.B) {
	payload := []byte(simulatorPayload)
	topic := "devices/sim-0001/telemetry"
	b.Run("scanner", func(b *testing.B) {
		d := newTestDecoder(b)
		dst := make([]schemas.Reading, 0, 64)
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		n := 0
		for b.Loop() {
			out, err := d.Decode(dst[:0], topic, payload)
			if err != nil {
				b.Fatal(err)
			}
			n += len(out)
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		n := 0
		for b.Loop() {
			out, ok := refDecode(payload, "ts", 1e6, "", testNow, 5*time.Minute)
			if !ok {
				b.Fatal("rejected")
			}
			n += len(out)
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
	})
	b.Run("encoding_json_unmarshal_map", func(b *testing.B) {
		// The least a decoder on encoding/json does: one Unmarshal, no
		// duplicate check.
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		n := 0
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(payload, &m); err != nil {
				b.Fatal(err)
			}
			n += len(m) - 1
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
	})
}
