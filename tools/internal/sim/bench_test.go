package sim

import (
	"strconv"
	"testing"

	"github.com/updraft-io/updraft/tools/internal/mqtttest"
)

// BenchmarkPublish measures how fast one simulator generates and publishes
// against an embedded broker, acks included, with no subscriber.
func BenchmarkPublish(b *testing.B) {
	for _, qos := range []int{0, 1} {
		b.Run("qos="+strconv.Itoa(qos), func(b *testing.B) {
			c := testConfig(mqtttest.Start(b))
			c.Devices = 100
			c.Connections = 4
			c.QoS = qos
			c.Messages = int64(b.N)
			_, sum := run(b, c)
			if sum.Messages != int64(b.N) {
				b.Fatalf("acked %d of %d", sum.Messages, b.N)
			}
			secs := sum.Finished.Sub(sum.Started).Seconds()
			b.ReportMetric(float64(sum.Messages)/secs, "msgs/s")
			b.ReportMetric(float64(sum.Readings)/secs, "readings/s")
		})
	}
}
