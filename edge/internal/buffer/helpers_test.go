package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/schemas"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

var testEdge = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}

func testConfig(t testing.TB) Config {
	c := DefaultConfig()
	c.Dir = t.TempDir()
	c.CommitInterval = time.Millisecond
	c.BatchMaxReadings = 100
	c.BatchMaxAge = 20 * time.Millisecond
	return c
}

// reading i of a deterministic series: 7 devices, 3 metrics, integer and
// fractional values, with and without unit.
func reading(i int) schemas.Reading {
	v := float64(i) * 0.37
	if i%5 == 0 {
		v = float64(i)
	}
	if i%11 == 0 {
		v = -v
	}
	unit := ""
	if i%3 != 2 {
		unit = []string{"C", "%"}[i%3]
	}
	return schemas.Reading{Region: testEdge.Region, Site: testEdge.Site, Edge: testEdge.Edge,
		Device: fmt.Sprintf("dev-%d", i%7), Metric: []string{"temp", "hum", "count"}[i%3],
		TS: 1_700_000_000_000_000_000 + int64(i)*1_000_000, Value: v, Unit: unit}
}

func readings(from, n int) []schemas.Reading {
	out := make([]schemas.Reading, n)
	for i := range out {
		out[i] = reading(from + i)
	}
	return out
}

func open(t testing.TB, cfg Config) *Buffer {
	t.Helper()
	b, err := Open(cfg, testEdge, nil, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return b
}

// start runs b until the test ends (or stop is called), then closes it.
func start(t testing.TB, b *Buffer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// appendWait appends and waits for done.
func appendWait(t testing.TB, b *Buffer, rs []schemas.Reading) {
	t.Helper()
	errc := make(chan error, 1)
	b.Append(schemas.KindRaw, rs, func(err error) { errc <- err })
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Append: done not called")
	}
}

func next(t testing.TB, b *Buffer, after uint64) Sealed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := b.Next(ctx, after)
	if err != nil {
		t.Fatalf("Next(%d): %v", after, err)
	}
	return s
}

// noNext checks that no batch after `after` shows up within d.
func noNext(t testing.TB, b *Buffer, after uint64, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if s, err := b.Next(ctx, after); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next(%d) = batch %d (%d readings), %v; want nothing", after, s.ID.Seq, len(s.Readings), err)
	}
}

// checkFor polls cond until it returns nil or the deadline passes.
func checkFor(t testing.TB, total, every time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(every)
	}
	t.Fatalf("condition not met after %v: %v", total, err)
}

func sameReadings(t testing.TB, got, want []schemas.Reading) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d readings, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Value != w.Value || math.Signbit(g.Value) != math.Signbit(w.Value) {
			t.Fatalf("reading %d: value %v, want %v", i, g.Value, w.Value)
		}
		g.Value, w.Value = 0, 0
		if g != w {
			t.Fatalf("reading %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// fakeClock is a settable clock for ages.
type fakeClock struct{ ns int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.get()).UTC() }
func (c *fakeClock) get() int64              { return atomicLoad(&c.ns) }
func (c *fakeClock) advance(d time.Duration) { atomicAdd(&c.ns, int64(d)) }

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
