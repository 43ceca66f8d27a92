package sim

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// generate renders n payloads in the simulator's device order.
func generate(t *testing.T, c Config, n int) (devices []int, payloads [][]byte) {
	t.Helper()
	sig := newSignal(c)
	devs := make([]*device, c.Devices)
	for i := range devs {
		devs[i] = sig.newDevice(c.Seed, i, c.Topic)
	}
	o := newOrder(c.Seed, c.Devices)
	now := time.UnixMilli(1732890000123)
	for range n {
		i := o.next()
		devices = append(devices, i)
		payloads = append(payloads, sig.next(devs[i], now))
	}
	return devices, payloads
}

func TestSignalDeterministic(t *testing.T) {
	c := DefaultConfig()
	c.Devices = 7
	d1, p1 := generate(t, c, 500)
	d2, p2 := generate(t, c, 500)
	if !slices.Equal(d1, d2) {
		t.Fatal("device order differs for the same seed")
	}
	for i := range p1 {
		if !bytes.Equal(p1[i], p2[i]) {
			t.Fatalf("payload %d differs for the same seed: %s vs %s", i, p1[i], p2[i])
		}
	}
	c.Seed++
	d3, p3 := generate(t, c, 500)
	if slices.Equal(d1, d3) {
		t.Error("device order is the same for another seed")
	}
	same := 0
	for i := range p1 {
		if bytes.Equal(p1[i], p3[i]) {
			same++
		}
	}
	if same > 10 {
		t.Errorf("%d of 500 payloads equal for another seed", same)
	}
}

func TestDeviceOrderIsFair(t *testing.T) {
	o := newOrder(42, 13)
	counts := make([]int, 13)
	for range 13 * 20 {
		counts[o.next()]++
	}
	for i, n := range counts {
		if n != 20 {
			t.Fatalf("device %d published %d times in 20 rounds", i, n)
		}
	}
}

func TestPayloadShapeAndQuantization(t *testing.T) {
	c := DefaultConfig()
	c.Devices = 5
	c.Period = time.Minute // several cycles within the run, to exercise the whole range
	c.Rate = 50
	_, payloads := generate(t, c, 5000)
	seen := map[string]map[float64]bool{}
	for _, p := range payloads {
		var m map[string]json.Number
		dec := json.NewDecoder(bytes.NewReader(p))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("payload %s: %v", p, err)
		}
		if len(m) != 4 {
			t.Fatalf("payload %s: want ts and 3 metrics", p)
		}
		if ts, err := m["ts"].Int64(); err != nil || ts < 1732890000123 {
			t.Fatalf("payload %s: ts %v", p, m["ts"])
		}
		for _, metric := range c.Metrics {
			raw, ok := m[metric.Name]
			if !ok {
				t.Fatalf("payload %s lacks %s", p, metric.Name)
			}
			v, err := raw.Float64()
			if err != nil {
				t.Fatal(err)
			}
			steps := v / metric.Resolution
			if math.Abs(steps-math.Round(steps)) > 1e-6 {
				t.Fatalf("%s = %s is not a multiple of %g", metric.Name, raw, metric.Resolution)
			}
			if frac := strings.SplitN(string(raw), ".", 2); len(frac) != 2 || len(frac[1]) != 1 {
				t.Fatalf("%s = %s: want exactly one decimal", metric.Name, raw)
			}
			bound := metric.Amplitude*1.25 + 5*metric.Drift + 6*metric.Noise + metric.Resolution
			if math.Abs(v-metric.Base) > bound {
				t.Errorf("%s = %g is implausibly far from %g", metric.Name, v, metric.Base)
			}
			if seen[metric.Name] == nil {
				seen[metric.Name] = map[float64]bool{}
			}
			seen[metric.Name][v] = true
		}
	}
	for name, vals := range seen {
		if len(vals) < 10 {
			t.Errorf("%s took only %d distinct values: the signal barely moves", name, len(vals))
		}
	}
}

func TestTimestampsStrictlyIncrease(t *testing.T) {
	c := DefaultConfig()
	sig := newSignal(c)
	d := sig.newDevice(1, 0, c.Topic)
	now := time.UnixMilli(1000)
	var last int64
	for i := range 100 {
		var m struct{ TS int64 }
		// The clock stands still: the simulator still never repeats a ts.
		if err := json.Unmarshal(sig.next(d, now), &m); err != nil {
			t.Fatal(err)
		}
		if i > 0 && m.TS <= last {
			t.Fatalf("ts %d after %d", m.TS, last)
		}
		last = m.TS
	}
}

func TestNoTimestamps(t *testing.T) {
	c := DefaultConfig()
	c.Timestamps = false
	c.Metrics = Metrics{{Name: "level", Base: 3, Resolution: 1}}
	_, p := generate(t, c, 1)
	if string(p[0]) != `{"level":3}` {
		t.Fatalf("payload %s", p[0])
	}
}

func TestDecimals(t *testing.T) {
	for _, tt := range []struct {
		res  float64
		want int
	}{{1, 0}, {5, 0}, {0.5, 1}, {0.1, 1}, {0.25, 2}, {0.01, 2}, {0.001, 3}, {2.5, 1}} {
		if got := decimals(tt.res); got != tt.want {
			t.Errorf("decimals(%g) = %d, want %d", tt.res, got, tt.want)
		}
	}
	for _, tt := range []struct{ v, res, want float64 }{
		{21.34, 0.1, 21.3}, {45.3, 0.5, 45.5}, {45.2, 0.5, 45}, {-0.04, 0.1, 0}, {1013.26, 0.1, 1013.3},
	} {
		if got := quantize(tt.v, tt.res); math.Abs(got-tt.want) > 1e-9 || math.Signbit(got) != math.Signbit(tt.want) {
			t.Errorf("quantize(%g, %g) = %g, want %g", tt.v, tt.res, got, tt.want)
		}
	}
}

// FuzzPayload: any metric set that passes Validate yields payloads that are
// valid JSON objects holding exactly ts and those metrics, quantized.
func FuzzPayload(f *testing.F) {
	f.Add("temperature", 21.0, 3.0, 0.1, 0.5, 0.1, int64(1))
	f.Add("ünïcode<&>", -40.0, 0.0, 0.0, 0.0, 0.25, int64(-5))
	f.Add("x", 1e300, 1e300, 1e300, 1e300, 1e-300, int64(0))
	f.Fuzz(func(t *testing.T, name string, base, amp, noise, drift, res float64, seed int64) {
		c := DefaultConfig()
		c.Devices = 2
		c.Seed = seed
		c.Metrics = Metrics{{Name: name, Base: base, Amplitude: amp, Noise: noise, Drift: drift, Resolution: res}}
		if c.Validate() != nil {
			return
		}
		_, payloads := generate(t, c, 4)
		for _, p := range payloads {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(p, &m); err != nil {
				t.Fatalf("payload %q: %v", p, err)
			}
			if _, ok := m[name]; !ok || len(m) != 2 {
				t.Fatalf("payload %q: want ts and %q", p, name)
			}
		}
	})
}
