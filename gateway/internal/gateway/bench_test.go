package gateway

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/gateway/internal/natsserver"
	"github.com/updraft-io/updraft/schemas/batch"
)

// BenchmarkPublish measures what jetstream.sync_interval costs: edges publish
// batches asynchronously with a Nats-Msg-Id, as here, and each message waits
// for its ack.
func BenchmarkPublish(b *testing.B) {
	const readingsPerBatch = 500
	for _, sync := range []natsserver.SyncInterval{natsserver.SyncAlways, natsserver.SyncInterval(time.Second), natsserver.SyncInterval(2 * time.Minute)} {
		b.Run("sync="+sync.String(), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.DataDir = b.TempDir()
			cfg.NATS.Listen, cfg.NATS.Monitor, cfg.HTTP.Addr = "127.0.0.1:0", "", "127.0.0.1:0"
			cfg.JetStream.SyncInterval = sync
			g, err := New(cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- g.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					b.Error(err)
				}
			}()
			<-g.Ready()
			nc, err := nats.Connect(g.ClientURL())
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
			if err != nil {
				b.Fatal(err)
			}
			m := testBatch(b, 1, readingsPerBatch)
			b.SetBytes(int64(len(m.Data)))
			b.ResetTimer()
			for i := range b.N {
				h := nats.Header{}
				for k, v := range m.Header {
					h[k] = v
				}
				h.Set(batch.HdrMsgID, "bench:"+strconv.Itoa(i))
				if _, err := js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}, jetstream.WithStallWait(time.Minute)); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("acks missing after a minute")
			}
			b.StopTimer()
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/secs, "msgs/s")
			b.ReportMetric(float64(b.N*readingsPerBatch)/secs, "readings/s")
		})
	}
}
