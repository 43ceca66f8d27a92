package batch_test

import (
	"testing"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// benchBatch is the simulator's default workload cut into the agent's
// batch size.
const benchBatch = 10_000

func BenchmarkEncode(b *testing.B) {
	rs := simulatorReadings(benchBatch)
	b.ReportAllocs()
	var size, n int
	for b.Loop() {
		msg, err := batch.Encode(testID, schemas.KindRaw, false, rs)
		if err != nil {
			b.Fatal(err)
		}
		size = len(msg.Data)
		n += len(rs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
	b.ReportMetric(float64(size)/float64(len(rs)), "bytes/reading")
}

func BenchmarkDecode(b *testing.B) {
	rs := simulatorReadings(benchBatch)
	msg, err := batch.Encode(testID, schemas.KindRaw, false, rs)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg.Data)))
	n := 0
	for b.Loop() {
		got, err := batch.Decode(msg.Subject, msg.Header, msg.Data)
		if err != nil {
			b.Fatal(err)
		}
		n += len(got.Readings)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
	b.ReportMetric(float64(len(msg.Data))/float64(len(rs)), "bytes/reading")
}
