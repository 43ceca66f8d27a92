package batch_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

var edge = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}

// simulatorReadings is the simulator's default workload in arrival order:
// 50 devices, each sending temperature (0.1 Cel steps, a slow sine plus
// noise), humidity (0.5 %RH steps) and pressure (0.1 hPa steps) about once
// a second with millisecond timestamps.
func simulatorReadings(n int) []schemas.Reading {
	const devices = 50
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2024, 4, 5, 11, 0, 0, 0, time.UTC).UnixMilli()
	names := make([]string, devices)
	phase := make([]float64, devices)
	for d := range names {
		names[d] = fmt.Sprintf("sim-%04d", d+1)
		phase[d] = rng.Float64() * 2 * math.Pi
	}
	round := func(v, step float64) float64 { return math.Round(v/step) * step }
	out := make([]schemas.Reading, 0, n)
	for sec := int64(0); len(out) < n; sec++ {
		for d := 0; d < devices && len(out) < n; d++ {
			ts := (start + sec*1000 + rng.Int64N(50)) * int64(time.Millisecond)
			x := 2*math.Pi*float64(sec)/3600 + phase[d]
			for _, m := range []struct {
				name, unit string
				v, step    float64
			}{
				{"temperature", "Cel", 21 + 3*math.Sin(x) + rng.NormFloat64()*0.1, 0.1},
				{"humidity", "%RH", 45 + 10*math.Sin(x+1) + rng.NormFloat64()*0.5, 0.5},
				{"pressure", "hPa", 1013 + 2*math.Sin(x/3) + rng.NormFloat64()*0.1, 0.1},
			} {
				if len(out) == n {
					break
				}
				out = append(out, schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge,
					Device: names[d], Metric: m.name, TS: ts, Value: round(m.v, m.step), Unit: m.unit})
			}
		}
	}
	return out
}
