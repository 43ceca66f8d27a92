package aggregate

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// FuzzAggregate feeds arbitrary readings (any finite value, times within an
// hour, arrival order as given) and checks the invariants: every reading is
// either merged into exactly one window per size or counted late; every
// emitted aggregate reading is valid; min <= quantiles, mean <= max.
func FuzzAggregate(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f})
	f.Add(binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint32(nil, 9000), math.Float64bits(1e300)))
	f.Fuzz(func(t *testing.T, data []byte) {
		clk := &fakeClock{t: t0}
		a := newAgg(t, DefaultConfig(), clk)
		edge := schemas.EdgeID{Region: "r", Site: "s", Edge: "e"}
		var out []Result
		n := 0
		for len(data) >= 12 {
			off := int64(binary.LittleEndian.Uint32(data)) % 3_600_000 // ms within an hour
			v := math.Float64frombits(binary.LittleEndian.Uint64(data[4:]))
			data = data[12:]
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			dev := "d" + string(rune('0'+off%3))
			at := t0.Add(time.Duration(off) * time.Millisecond)
			if at.After(clk.Now()) {
				clk.Set(at)
			}
			out = append(out, a.Add([]schemas.Reading{rd(dev, "m", at, v)})...)
			n++
		}
		clk.Set(t0.Add(3 * time.Hour))
		out = append(out, a.Tick()...)
		st := a.Stats()
		perSize := map[time.Duration]int64{}
		for i := range out {
			r := &out[i]
			perSize[r.Window] += r.Count
			if r.Min > r.Max || r.Mean < r.Min || r.Mean > r.Max || r.Last < r.Min || r.Last > r.Max {
				t.Fatalf("inconsistent window %+v", r)
			}
			for _, q := range []float64{r.P50, r.P90, r.P99} {
				if !math.IsNaN(q) && (q < r.Min || q > r.Max) {
					t.Fatalf("quantile %v outside [%v, %v]", q, r.Min, r.Max)
				}
			}
			rs, _ := r.AppendReadings(nil, edge)
			for _, x := range rs {
				if err := x.Validate(); err != nil {
					t.Fatalf("%s: %v", x.Metric, err)
				}
			}
		}
		for _, size := range DefaultConfig().Windows {
			if merged := perSize[size]; merged > int64(n) || merged < int64(n)-int64(st.LateReadings) {
				t.Fatalf("%v: %d readings merged of %d, %d late", size, merged, n, st.LateReadings)
			}
		}
		if st.OpenWindows != 0 {
			t.Fatalf("%d windows still open", st.OpenWindows)
		}
	})
}
