package buffer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// appendAsync appends and returns a channel that gets done's error.
func appendAsync(b *Buffer, rs []schemas.Reading) <-chan error {
	errc := make(chan error, 1)
	b.Append(schemas.KindRaw, rs, func(err error) { errc <- err })
	return errc
}

// drain reads and acknowledges every batch until none comes within idle.
func drain(t *testing.T, b *Buffer, after uint64, idle time.Duration) (all []Sealed, last uint64) {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), idle)
		s, err := b.Next(ctx, after)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return all, after
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Ack(s.ID.Seq); err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
		after = s.ID.Seq
	}
}

func TestPolicyBlock(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBytes = MinMaxBytes
	cfg.BatchMaxReadings = 1000
	b := open(t, cfg)
	stop := start(t, b)

	// Fill without a consumer until the buffer reports it is full.
	n := 0
	fill := func() <-chan error {
		t.Helper()
		for b.Stats().BufferedBytes < int64(cfg.MaxBytes) {
			appendWait(t, b, readings(n, 200))
			n += 200
		}
		checkFor(t, 10*time.Second, time.Millisecond, func() error {
			if !b.Stats().Blocked {
				return errors.New("not blocked")
			}
			return nil
		})
		held := appendAsync(b, readings(n, 200))
		n += 200
		select {
		case err := <-held:
			t.Fatalf("append to a full buffer completed: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		return held
	}
	held := fill()
	// Forwarding frees space; the held append completes and nothing is lost.
	got, after := drain(t, b, 0, 300*time.Millisecond)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	more, _ := drain(t, b, after, 300*time.Millisecond)
	got = append(got, more...)
	var rs []schemas.Reading
	for _, s := range got {
		rs = append(rs, s.Readings...)
	}
	sameReadings(t, rs, readings(0, n))
	if st := b.Stats(); st.Blocked || len(nonZero(st.Dropped)) != 0 {
		t.Fatalf("stats after drain %+v", st)
	}

	// At shutdown, an append still waiting for space gets the context's error.
	held = fill()
	stop()
	if err := <-held; !errors.Is(err, context.Canceled) {
		t.Fatalf("held append at shutdown got %v, want context.Canceled", err)
	}
}

func TestPolicyBlockMaxAge(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxAge = time.Hour
	b := open(t, cfg)
	clock := &fakeClock{ns: time.Now().UnixNano()}
	b.now = clock.now
	start(t, b)
	appendWait(t, b, readings(0, 150))
	clock.advance(2 * time.Hour)
	b.house <- struct{}{}
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if !b.Stats().Blocked {
			return errors.New("not blocked")
		}
		return nil
	})
	held := appendAsync(b, readings(150, 10))
	select {
	case err := <-held:
		t.Fatalf("append past max_age completed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	got, _ := drain(t, b, 0, 300*time.Millisecond)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if n := len(got); n < 2 {
		t.Fatalf("%d batches drained", n)
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func TestPolicyDropOldest(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBytes = MinMaxBytes
	cfg.Policy = PolicyDropOldest
	cfg.BatchMaxReadings = 500
	b := open(t, cfg)
	start(t, b)
	const total = 20_000
	for i := 0; i < total; i += 100 {
		appendWait(t, b, readings(i, 100))
	}
	st := b.Stats()
	if st.BufferedBytes > int64(cfg.MaxBytes) {
		t.Fatalf("buffered %d bytes, max %d", st.BufferedBytes, cfg.MaxBytes)
	}
	dropped := st.Dropped[ReasonMaxBytes]
	if dropped == 0 || dropped+uint64(st.BufferedReadings) != total {
		t.Fatalf("dropped %d + buffered %d != %d", dropped, st.BufferedReadings, total)
	}
	got, _ := drain(t, b, 0, 300*time.Millisecond)
	var rs []schemas.Reading
	for _, s := range got {
		rs = append(rs, s.Readings...)
	}
	// The newest readings survive, in order.
	sameReadings(t, rs, readings(total-len(rs), len(rs)))
	if uint64(len(rs))+dropped != total {
		t.Fatalf("delivered %d + dropped %d != %d", len(rs), dropped, total)
	}
}

func TestPolicyDropOldestMaxAge(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxAge = time.Hour
	cfg.Policy = PolicyDropOldest
	b := open(t, cfg)
	clock := &fakeClock{ns: time.Now().UnixNano()}
	b.now = clock.now
	start(t, b)
	appendWait(t, b, readings(0, 250)) // batches 0..99, 100..199; 200..249 open
	clock.advance(2 * time.Hour)
	appendWait(t, b, readings(250, 100)) // seals 200..299, born old; 300..349 open, born now
	appendWait(t, b, readings(350, 100)) // seals 300..399; 400..449 open
	b.house <- struct{}{}
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if d := b.Stats().Dropped[ReasonMaxAge]; d != 300 {
			return fmt.Errorf("%d dropped for max_age", d)
		}
		return nil
	})
	clock.advance(time.Second) // the open batch is now old enough to seal for a waiting consumer
	got, _ := drain(t, b, 0, 300*time.Millisecond)
	var rs []schemas.Reading
	for _, s := range got {
		rs = append(rs, s.Readings...)
	}
	sameReadings(t, rs, readings(300, 150))
}

// minuteOfReadings: batch i holds minute i: 600 readings, 3 devices x 2
// metrics, every 100 ms.
func minuteOfReadings(minute int) []schemas.Reading {
	base := int64(1_700_000_040) * 1e9 // a minute boundary
	out := make([]schemas.Reading, 600)
	for j := range out {
		v := math.Sin(float64(minute*600+j)) * 40
		if j%4 == 0 {
			v = float64(j % 17)
		}
		out[j] = schemas.Reading{Region: testEdge.Region, Site: testEdge.Site, Edge: testEdge.Edge,
			Device: fmt.Sprintf("dev-%d", j%3), Metric: []string{"temp", "rpm"}[j/3%2],
			TS: base + int64(minute)*60e9 + int64(j)*100e6, Value: v, Unit: []string{"C", ""}[j/3%2]}
	}
	return out
}

// referenceSummary is the brute-force definition from docs/buffer.md.
func referenceSummary(rs []schemas.Reading) []schemas.Reading {
	type key struct {
		minute               int64
		device, metric, unit string
	}
	groups := map[key][]schemas.Reading{}
	for _, r := range rs {
		k := key{r.TS / 60e9 * 60e9, r.Device, r.Metric, r.Unit}
		groups[k] = append(groups[k], r)
	}
	var out []schemas.Reading
	for k, g := range groups {
		mk := func(suffix string, v float64, ts int64, unit string) {
			out = append(out, schemas.Reading{Region: testEdge.Region, Site: testEdge.Site, Edge: testEdge.Edge,
				Device: k.device, Metric: k.metric + suffix, TS: ts, Value: v, Unit: unit})
		}
		lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
		last := g[0]
		for _, r := range g {
			lo, hi, sum = math.Min(lo, r.Value), math.Max(hi, r.Value), sum+r.Value
			if r.TS >= last.TS {
				last = r
			}
		}
		mk(":count", float64(len(g)), k.minute, "")
		mk(":min", lo, k.minute, k.unit)
		mk(":max", hi, k.minute, k.unit)
		mk(":mean", sum/float64(len(g)), k.minute, k.unit)
		mk(":last", last.Value, last.TS, k.unit)
	}
	return out
}

func sortReadings(rs []schemas.Reading) {
	slices.SortFunc(rs, func(a, b schemas.Reading) int {
		return cmp.Or(cmp.Compare(a.TS, b.TS), cmp.Compare(a.Device, b.Device), cmp.Compare(a.Metric, b.Metric))
	})
}

func TestPolicyDownsample(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBytes = MinMaxBytes
	cfg.Policy = PolicyDownsample
	cfg.BatchMaxReadings = 600
	b := open(t, cfg)
	start(t, b)
	const minutes = 40
	var all []schemas.Reading
	for m := range minutes {
		rs := minuteOfReadings(m)
		all = append(all, rs...)
		appendWait(t, b, rs)
	}
	got, _ := drain(t, b, 0, 300*time.Millisecond)
	st := b.Stats()
	summarised := st.Summarised[ReasonMaxBytes]
	if summarised == 0 || len(nonZero(st.Dropped)) != 0 {
		t.Fatalf("stats %+v", st)
	}
	rawMinutes := map[int64]bool{}
	var raw, sums []schemas.Reading
	for _, s := range got {
		switch s.Kind {
		case schemas.KindRaw:
			raw = append(raw, s.Readings...)
			for _, r := range s.Readings {
				rawMinutes[r.TS/60e9] = true
			}
		case schemas.KindAgg:
			sums = append(sums, s.Readings...)
		}
	}
	var gone []schemas.Reading
	for _, r := range all {
		if !rawMinutes[r.TS/60e9] {
			gone = append(gone, r)
		}
	}
	if uint64(len(gone)) != summarised || len(raw)+len(gone) != len(all) {
		t.Fatalf("raw %d + summarised %d (stats %d) != %d", len(raw), len(gone), summarised, len(all))
	}
	want := referenceSummary(gone)
	sortReadings(want)
	sortReadings(sums)
	sameReadings(t, sums, want)
	for _, r := range sums {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d of %d minutes summarised into %d readings", len(gone)/600, minutes, len(sums))
}

func TestSummariseEdgeCases(t *testing.T) {
	long := reading(0)
	long.Metric = string(make([]byte, 0, 0)) + fmt.Sprintf("%0125d", 7)
	rs := []schemas.Reading{long, reading(1), reading(1)}
	sum, lost := summarise(rs)
	if lost != 1 {
		t.Fatalf("lost %d, want 1 (metric too long for a suffix)", lost)
	}
	want := referenceSummary(rs[1:])
	sortReadings(want)
	sortReadings(sum)
	sameReadings(t, sum, want)
	if out, lost := summarise(nil); len(out) != 0 || lost != 0 {
		t.Fatal("summary of nothing")
	}
}
