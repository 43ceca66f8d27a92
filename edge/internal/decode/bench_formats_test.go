package decode

import (
	"testing"

	"github.com/updraft-io/updraft/edge/internal/decode/sparkplug"
	"github.com/updraft-io/updraft/schemas"
)

// benchFormat decodes one message over and over and reports readings/s and
// allocations per reading (allocs/op divided by the readings per message).
func benchFormat(b *testing.B, d *Decoder, topic string, payload []byte) {
	dst := make([]schemas.Reading, 0, 64)
	out, err := d.Decode(dst, topic, payload)
	if err != nil {
		b.Fatal(err)
	}
	per := len(out)
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
	b.ReportMetric(float64(per), "readings/msg")
}

// BenchmarkDecodeFormats decodes what the simulator publishes in each
// format (3 readings per message; 1 for homie and numeric).
func BenchmarkDecodeFormats(b *testing.B) {
	cases := []struct{ name, topic, payload string }{
		{"json", "devices/sim-0001/telemetry", simulatorPayload},
		{"json_nested", "nested/sim-0001/telemetry", `{"ts":1712314800123,"env":{"temperature":21.37,"humidity":45.5},"pressure":1013.21}`},
		{"senml", "senml/sim-0001", `[{"bn":"sim-0001:","bt":1712314800.123,"n":"temperature","u":"Cel","v":21.37},{"n":"humidity","u":"%RH","v":45.5},{"n":"pressure","u":"hPa","v":1013.21}]`},
		{"tasmota", "tele/sim-0001/SENSOR", `{"Time":"2024-04-05T11:00:00","BME280":{"Temperature":21.4,"Humidity":45.5,"Pressure":1013.2},"PressureUnit":"hPa","TempUnit":"C"}`},
		{"zigbee2mqtt", "zigbee2mqtt/sim-0001", `{"temperature":21.37,"humidity":45.5,"pressure":1013.2,"last_seen":1712314800123}`},
		{"homie", "homie/5/sim-0001/sensor/temperature", `21.37`},
		{"numeric", "plain/sim-0001/temperature", `21.37`},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { benchFormat(b, newTestDecoder(b), c.topic, []byte(c.payload)) })
	}
	b.Run("sparkplug", func(b *testing.B) {
		d := newTestDecoder(b)
		for _, f := range spFixtures(b)[:2] {
			if _, err := d.Decode(nil, f.topic, f.payload); err != nil {
				b.Fatal(err)
			}
		}
		// DDATA without seq, so repeating it is no gap.
		payload := spPayload(b, 2, spSent,
			spM("", 10, sparkplug.DataType_Float, float32(2.75)),
			spM("", 11, sparkplug.DataType_Int32, uint32(5)),
			spM("", 12, sparkplug.DataType_Boolean, true))
		benchFormat(b, d, "spBv1.0/plant/DDATA/gw 1/pump.1", payload)
	})
}
