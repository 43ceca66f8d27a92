package natstest

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// The cloud benchmarks' workload, as the cloud scenario of
// docs/performance.md: WorkloadDevices devices x 3 metrics, one reading per
// second each, in batches of WorkloadPerBatch readings.
const (
	WorkloadDevices  = 100
	WorkloadPerBatch = 1200
)

var workloadMetrics = []string{"temp", "rh", "rpm"}

// WorkloadBatch is batch seq of the workload from edge, encoded as an edge
// sends it; values are random normal.
func WorkloadBatch(tb testing.TB, rng *rand.Rand, edge schemas.EdgeID, start time.Time, seq uint64) *batch.Message {
	series := WorkloadDevices * len(workloadMetrics)
	rs := make([]schemas.Reading, WorkloadPerBatch)
	for i := range rs {
		step := int(seq)*WorkloadPerBatch/series + i/series
		s := i % series
		rs[i] = schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge,
			Device: fmt.Sprintf("pump-%d", s/len(workloadMetrics)), Metric: workloadMetrics[s%len(workloadMetrics)], Unit: "C",
			TS: start.Add(time.Duration(step) * time.Second).UnixNano(), Value: rng.NormFloat64()}
	}
	m, err := batch.Encode(batch.ID{Edge: edge, Epoch: 1, Seq: seq}, schemas.KindRaw, false, rs)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}
