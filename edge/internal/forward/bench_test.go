package forward

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/schemas"
)

// BenchmarkBacklogDrain measures how fast a backlog left by a previous run
// (batches of 10,000 readings) drains into a JetStream file stream while live
// readings keep arriving (1,000 readings every 10 ms). It reports the backlog
// drain rate; the target is at least 200,000 readings/s.
//
//	go test -run '^$' -bench BacklogDrain -benchtime 1x ./edge/internal/forward/
func BenchmarkBacklogDrain(b *testing.B) {
	const backlog = 2_000_000
	for range b.N {
		b.StopTimer()
		nc, js := runJetStreamB(b)
		dir := b.TempDir()
		cfg := bufferConfig(nil, dir)
		cfg.BatchMaxReadings = 10000
		buf, err := buffer.Open(cfg, testEdge, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- buf.Run(ctx) }()
		rs := make([]schemas.Reading, 10000)
		for i := 0; i < backlog; i += len(rs) {
			for j := range rs {
				rs[j] = reading(i + j)
			}
			done := make(chan error, 1)
			buf.Append(schemas.KindRaw, rs, func(err error) { done <- err })
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		cancel()
		if err := errors.Join(<-errc, buf.Close()); err != nil {
			b.Fatal(err)
		}
		buf, err = buffer.Open(cfg, testEdge, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel = context.WithCancel(context.Background())
		go func() { errc <- buf.Run(ctx) }()
		f := New(DefaultConfig(), testEdge, buf, js, nil, nil)
		ferr := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { ferr <- f.Run(ctx) }()
		liveStop := make(chan struct{})
		liveDone := make(chan int)
		go func() {
			n := 0
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			live := make([]schemas.Reading, 1000)
			for {
				select {
				case <-liveStop:
					liveDone <- n
					return
				case <-tick.C:
				}
				for j := range live {
					live[j] = reading(backlog + n + j)
				}
				buf.Append(schemas.KindRaw, live, func(error) {})
				n += len(live)
			}
		}()
		for f.Stats().ReplayReadings < backlog {
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("backlog not drained after 2 minutes: %+v", f.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
		el := time.Since(start)
		b.StopTimer()
		close(liveStop)
		live := <-liveDone
		st := f.Stats()
		b.ReportMetric(float64(backlog)/el.Seconds(), "readings/s")
		b.ReportMetric(float64(st.ReadingsSent-st.ReplayReadings)/el.Seconds(), "live-readings/s")
		b.Logf("drained %d backlog readings in %v while %d live readings arrived (%d sent as live)", backlog,
			el.Round(time.Millisecond), live, st.ReadingsSent-st.ReplayReadings)
		cancel()
		if err := errors.Join(<-ferr, <-errc, buf.Close()); err != nil {
			b.Fatal(err)
		}
		nc.Close()
	}
}
