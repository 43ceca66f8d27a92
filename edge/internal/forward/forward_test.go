package forward

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Badger and the NATS server keep process-wide helpers.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2.(*defaultPolicy[...]).processItems"),
	)
}

var testEdge = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}

func runJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) { return runJetStreamB(t) }

func runJetStreamB(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY",
		Subjects: []string{"telemetry.>", "deadletter.>"}}); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func bufferConfig(_ testing.TB, dir string) buffer.Config {
	c := buffer.DefaultConfig()
	c.Dir = dir
	c.CommitInterval = time.Millisecond
	c.BatchMaxReadings = 100
	c.BatchMaxAge = 20 * time.Millisecond
	return c
}

func reading(i int) schemas.Reading {
	return schemas.Reading{Region: testEdge.Region, Site: testEdge.Site, Edge: testEdge.Edge,
		Device: fmt.Sprintf("dev-%d", i%7), Metric: "temp", Unit: "C",
		TS: 1_700_000_000_000_000_000 + int64(i)*1_000_000, Value: float64(i)}
}

// startBuffer opens and runs a buffer until the test ends.
func startBuffer(t *testing.T, dir string) *buffer.Buffer {
	t.Helper()
	b, err := buffer.Open(bufferConfig(t, dir), testEdge, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("buffer Run: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("buffer Close: %v", err)
		}
	})
	return b
}

func appendRange(t *testing.T, b *buffer.Buffer, from, n int) {
	t.Helper()
	rs := make([]schemas.Reading, n)
	for i := range rs {
		rs[i] = reading(from + i)
	}
	errc := make(chan error, 1)
	b.Append(schemas.KindRaw, rs, func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatalf("append: %v", err)
	}
}

// fillBacklog leaves n readings in dir's buffer, sealed by a previous run.
func fillBacklog(t *testing.T, dir string, n int) {
	t.Helper()
	b, err := buffer.Open(bufferConfig(t, dir), testEdge, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	for i := 0; i < n; i += 1000 {
		appendRange(t, b, i, min(1000, n-i))
	}
	cancel()
	if err := errors.Join(<-errc, b.Close()); err != nil {
		t.Fatal(err)
	}
}

// arrival is a batch seen on the stream's subjects.
type arrival struct {
	b  *batch.Batch
	at time.Time
	n  int // encoded bytes
}

type recorder struct {
	mu  sync.Mutex
	got []arrival
}

func record(t *testing.T, nc *nats.Conn) *recorder {
	t.Helper()
	r := &recorder{}
	sub, err := nc.Subscribe("telemetry.>", func(m *nats.Msg) {
		b, err := batch.Decode(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Errorf("decode %s: %v", m.Subject, err)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, arrival{b: b, at: time.Now(), n: len(m.Data)})
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

func (r *recorder) snapshot() []arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]arrival(nil), r.got...)
}

func runForwarder(t *testing.T, cfg Config, b *buffer.Buffer, js jetstream.JetStream) *Forwarder {
	t.Helper()
	f := New(cfg, testEdge, b, js, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("forwarder Run: %v", err)
		}
	})
	return f
}

func checkFor(t *testing.T, total time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestForwardBacklogAndLiveExactlyOnce: a backlog left by a previous run and
// live readings appended while it drains all reach the stream, each reading
// exactly once; backlog batches carry the replay header.
func TestForwardBacklogAndLiveExactlyOnce(t *testing.T) {
	const backlog, live = 20_000, 5_000
	nc, js := runJetStream(t)
	dir := t.TempDir()
	fillBacklog(t, dir, backlog)
	b := startBuffer(t, dir)
	rec := record(t, nc)
	f := runForwarder(t, DefaultConfig(), b, js)
	for i := 0; i < live; i += 100 {
		appendRange(t, b, backlog+i, 100)
	}
	checkFor(t, 30*time.Second, func() error {
		if st := b.Stats(); st.BufferedReadings != 0 || st.UnackedBatches != 0 {
			return fmt.Errorf("buffer holds %d readings in %d batches", st.BufferedReadings, st.UnackedBatches)
		}
		return nil
	})
	// JetStream acknowledges a batch to the forwarder and delivers it to the
	// recorder's subscription independently: the last ack can come first.
	checkFor(t, 10*time.Second, func() error {
		n := 0
		for _, a := range rec.snapshot() {
			n += len(a.b.Readings)
		}
		if n < backlog+live {
			return fmt.Errorf("recorder has %d of %d readings", n, backlog+live)
		}
		return nil
	})
	seen := make(map[int64]int)
	ids := make(map[string]bool)
	for _, a := range rec.snapshot() {
		if ids[a.b.ID.MsgID()] {
			continue // a re-send the stream absorbed
		}
		ids[a.b.ID.MsgID()] = true
		for _, r := range a.b.Readings {
			seen[r.TS]++
			i := int((r.TS - reading(0).TS) / 1_000_000)
			if r.Value != float64(i) {
				t.Fatalf("reading %d has value %v", i, r.Value)
			}
			if i < backlog && !a.b.Replay {
				t.Fatalf("backlog batch %s has no replay header", a.b.ID)
			}
		}
	}
	for i := range backlog + live {
		if n := seen[reading(i).TS]; n != 1 {
			t.Fatalf("reading %d arrived %d times", i, n)
		}
	}
	st := f.Stats()
	if st.ReadingsSent != backlog+live || st.NATS != "CONNECTED" {
		t.Fatalf("stats %+v", st)
	}
}

// TestForwardCountsRawReadings: Stats counts every reading sent, and apart
// those of raw batches.
func TestForwardCountsRawReadings(t *testing.T) {
	_, js := runJetStream(t)
	b := startBuffer(t, t.TempDir())
	f := runForwarder(t, DefaultConfig(), b, js)
	appendRange(t, b, 0, 250)
	agg := make([]schemas.Reading, 30)
	for i := range agg {
		agg[i] = reading(i)
		agg[i].Metric = "temp_mean"
	}
	errc := make(chan error, 1)
	b.Append(schemas.KindAgg, agg, func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	checkFor(t, 30*time.Second, func() error {
		if st := f.Stats(); st.ReadingsSent != 280 || st.RawReadingsSent != 250 {
			return fmt.Errorf("sent %d readings, %d raw; want 280, 250 raw", st.ReadingsSent, st.RawReadingsSent)
		}
		return nil
	})
}

// TestForwardLiveFlowsWhileBacklogDrains: with an uplink cap, live batches
// reach the stream promptly while a backlog drains, and the backlog keeps to
// its share of the cap.
func TestForwardLiveFlowsWhileBacklogDrains(t *testing.T) {
	const backlog = 50_000
	nc, js := runJetStream(t)
	dir := t.TempDir()
	fillBacklog(t, dir, backlog)
	b := startBuffer(t, dir)
	rec := record(t, nc)
	cfg := DefaultConfig()
	cfg.MaxBytesPerSecond = 64 << 10
	cfg.BacklogShare = 0.5
	start := time.Now()
	f := runForwarder(t, cfg, b, js)

	const rounds = 15
	var appended []time.Time
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := range rounds {
		<-tick.C
		appendRange(t, b, backlog+i*100, 100)
		appended = append(appended, time.Now())
	}
	// Every live batch arrives while the backlog is still far from drained.
	checkFor(t, 10*time.Second, func() error {
		n := 0
		for _, a := range rec.snapshot() {
			if a.b.Readings[0].TS >= reading(backlog).TS {
				n += len(a.b.Readings)
			}
		}
		if n < rounds*100 {
			return fmt.Errorf("%d of %d live readings arrived", n, rounds*100)
		}
		return nil
	})
	elapsed := time.Since(start)
	var backlogBytes, liveBytes int
	var worst time.Duration
	for _, a := range rec.snapshot() {
		if a.b.Readings[0].TS < reading(backlog).TS {
			backlogBytes += a.n
			continue
		}
		liveBytes += a.n
		i := int((a.b.Readings[0].TS-reading(backlog).TS)/1_000_000) / 100
		worst = max(worst, a.at.Sub(appended[i]))
	}
	if st := b.Stats(); st.BufferedReadings < backlog/2 {
		t.Fatalf("the backlog nearly drained (%d left): the cap was not applied", st.BufferedReadings)
	}
	// The backlog's budget: its share of the cap plus the buckets' bursts.
	budget := float64(cfg.MaxBytesPerSecond)*cfg.BacklogShare*elapsed.Seconds() + 2*(64<<10)
	if float64(backlogBytes) > budget {
		t.Fatalf("backlog sent %d bytes in %v, over its budget of %.0f", backlogBytes, elapsed, budget)
	}
	if worst > 2*time.Second {
		t.Fatalf("a live batch took %v to reach the stream", worst)
	}
	st := f.Stats()
	t.Logf("in %v: backlog %d bytes, live %d bytes, worst live latency %v; stats %+v", elapsed.Round(time.Millisecond),
		backlogBytes, liveBytes, worst, st)
	checkFor(t, 5*time.Second, func() error {
		if st := f.Stats(); st.BacklogRate <= 0 || st.LiveRate <= 0 {
			return fmt.Errorf("rates not measured: %+v", st)
		}
		return nil
	})
	if bst := b.Stats(); bst.OldestUnsentAge <= 0 {
		t.Fatalf("oldest unsent age %v with a backlog", bst.OldestUnsentAge)
	}
}

func TestBucketLongRunRate(t *testing.T) {
	b := newBucket(1000)
	now := time.Unix(0, 0)
	var waited time.Duration
	for range 100 {
		d := b.reserve(now, 500)
		waited = d
		now = now.Add(d)
	}
	// 50,000 bytes at 1000 B/s, minus the initial burst of 16 KiB.
	want := time.Duration((50_000.0 - 16<<10) / 1000 * float64(time.Second))
	if got := now.Sub(time.Unix(0, 0)); got < want-time.Second || got > want+time.Second {
		t.Fatalf("100 x 500 B took %v at 1000 B/s, want about %v (last wait %v)", got, want, waited)
	}
}
