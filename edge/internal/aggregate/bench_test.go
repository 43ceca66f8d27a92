package aggregate

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// BenchmarkAdd: readings of 1,000 series, 10 per second each, into the
// default 10 s and 1 min windows, in batches of 100 as the agent sees them.
func BenchmarkAdd(b *testing.B) {
	clk := &fakeClock{t: t0}
	a := newAgg(b, DefaultConfig(), clk)
	const series, batch = 1000, 100
	devs := make([]string, series)
	for i := range devs {
		devs[i] = fmt.Sprintf("sensor-%04d", i)
	}
	rs := make([]schemas.Reading, batch)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for n < b.N {
		for j := range rs {
			k := n + j
			ts := t0.Add(time.Duration(k/series) * 100 * time.Millisecond)
			rs[j] = schemas.Reading{Region: "r", Site: "s", Edge: "e", Device: devs[k%series], Metric: "temperature",
				TS: ts.UnixNano(), Value: 20 + float64(k%97)/10, Unit: "Cel"}
		}
		clk.Set(time.Unix(0, rs[batch-1].TS))
		a.Add(rs)
		n += batch
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
}

// BenchmarkMemoryPerSeries measures the heap held per active series with
// one open window of each default size, with 100 distinct values per window.
func BenchmarkMemoryPerSeries(b *testing.B) {
	const series = 10_000
	for range b.N {
		clk := &fakeClock{t: t0}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		a := newAgg(b, DefaultConfig(), clk)
		rs := make([]schemas.Reading, 0, 100)
		for i := range series {
			dev := fmt.Sprintf("sensor-%05d", i)
			rs = rs[:0]
			for j := range 100 {
				rs = append(rs, schemas.Reading{Region: "r", Site: "s", Edge: "e", Device: dev, Metric: "temperature",
					TS: t0.Add(time.Duration(j) * 10 * time.Millisecond).UnixNano(), Value: 15 + float64(j)/10, Unit: "Cel"})
			}
			a.Add(rs)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		a.Tick()
		st := a.Stats()
		b.ReportMetric(float64(st.ApproxBytes)/series, "estimated-bytes/series")
		per := float64(after.HeapAlloc-before.HeapAlloc) / series
		b.ReportMetric(per, "bytes/series")
		b.ReportMetric(per/float64(st.OpenWindows/series), "bytes/series-window")
		runtime.KeepAlive(a)
	}
}
