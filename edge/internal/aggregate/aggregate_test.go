package aggregate

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// fakeClock is the agent clock under test control.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func rd(dev, met string, ts time.Time, v float64) schemas.Reading {
	return schemas.Reading{Region: "r", Site: "s", Edge: "e", Device: dev, Metric: met, TS: ts.UnixNano(), Value: v, Unit: "u"}
}

func newAgg(t testing.TB, cfg Config, clk *fakeClock) *Aggregator {
	t.Helper()
	a, err := New(cfg, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type winKey struct {
	device, metric string
	size           time.Duration
	start          int64
}

type arrival struct {
	r  schemas.Reading
	at time.Time
}

// reference computes every window of the readings by brute force.
func reference(rs []arrival, sizes []time.Duration) map[winKey][]arrival {
	out := map[winKey][]arrival{}
	for _, a := range rs {
		for _, sz := range sizes {
			k := winKey{a.r.Device, a.r.Metric, sz, floorDiv(a.r.TS, int64(sz))}
			out[k] = append(out[k], a)
		}
	}
	return out
}

func exactSum(rs []arrival) float64 {
	s := new(big.Float).SetPrec(2048)
	for _, a := range rs {
		s.Add(s, new(big.Float).SetPrec(2048).SetFloat64(a.r.Value))
	}
	f, _ := s.Float64()
	return f
}

func exactStddev(rs []arrival) float64 {
	n := new(big.Float).SetPrec(2048).SetInt64(int64(len(rs)))
	sum := new(big.Float).SetPrec(2048)
	for _, a := range rs {
		sum.Add(sum, new(big.Float).SetPrec(2048).SetFloat64(a.r.Value))
	}
	mean := new(big.Float).SetPrec(2048).Quo(sum, n)
	ss := new(big.Float).SetPrec(2048)
	for _, a := range rs {
		d := new(big.Float).SetPrec(2048).Sub(new(big.Float).SetPrec(2048).SetFloat64(a.r.Value), mean)
		ss.Add(ss, d.Mul(d, d))
	}
	ss.Quo(ss, n)
	f, _ := ss.Float64()
	return math.Sqrt(f)
}

func scale(rs []arrival) float64 {
	m := 0.0
	for _, a := range rs {
		m = max(m, math.Abs(a.r.Value))
	}
	return m
}

// check compares one emitted window with the brute-force reference.
func check(t *testing.T, got Result, want []arrival) {
	t.Helper()
	name := fmt.Sprintf("%s/%s %v@%d", got.Device, got.Metric, got.Window, got.Start)
	if got.Count != int64(len(want)) {
		t.Fatalf("%s: count %d, want %d", name, got.Count, len(want))
	}
	vals := make([]float64, len(want))
	for i, a := range want {
		vals[i] = a.r.Value
	}
	slices.Sort(vals)
	if got.Min != vals[0] || got.Max != vals[len(vals)-1] {
		t.Errorf("%s: min/max %v/%v, want %v/%v", name, got.Min, got.Max, vals[0], vals[len(vals)-1])
	}
	// last: greatest event time, later arrival on a tie.
	last := want[0]
	for _, a := range want[1:] {
		if a.r.TS >= last.r.TS {
			last = a
		}
	}
	if got.Last != last.r.Value || got.LastTS != last.r.TS {
		t.Errorf("%s: last %v@%d, want %v@%d", name, got.Last, got.LastTS, last.r.Value, last.r.TS)
	}
	sc := scale(want)
	n := float64(len(want))
	if s := exactSum(want); math.Abs(got.Sum-s) > 4*n*0x1p-52*math.Abs(s)+1e-300 && math.Abs(got.Sum-s) > 1e-12*sc {
		t.Errorf("%s: sum %v, want %v", name, got.Sum, s)
	}
	if m := exactSum(want) / n; math.Abs(got.Mean-m) > 1e-12*sc {
		t.Errorf("%s: mean %v, want %v", name, got.Mean, m)
	}
	if sd := exactStddev(want); math.Abs(got.Stddev-sd) > 1e-6*sc {
		t.Errorf("%s: stddev %v, want %v", name, got.Stddev, sd)
	}
	for i, q := range Quantiles {
		// The sample quantile at rank q(n-1): the sketch rounds the rank
		// down among positive values and up among negative ones.
		r := q * (n - 1)
		lo, hi := vals[int(math.Floor(r))], vals[int(math.Ceil(r))]
		est := []float64{got.P50, got.P90, got.P99}[i]
		within := func(exact float64) bool { return math.Abs(est-exact) <= RelativeAccuracy*math.Abs(exact)*(1+1e-9) }
		if !within(lo) && !within(hi) {
			t.Errorf("%s: p%v = %v, exact %v..%v: beyond %v relative error", name, q*100, est, lo, hi, RelativeAccuracy)
		}
	}
}

// run feeds arrivals (sorted by arrival time) one by one, then moves the
// clock far ahead, and returns every emitted window keyed.
func run(t *testing.T, cfg Config, as []arrival) (map[winKey]Result, *Aggregator) {
	t.Helper()
	clk := &fakeClock{t: t0}
	a := newAgg(t, cfg, clk)
	got := map[winKey]Result{}
	collect := func(rs []Result) {
		for _, r := range rs {
			k := winKey{r.Device, r.Metric, r.Window, r.Start}
			if _, dup := got[k]; dup {
				t.Fatalf("window %+v emitted twice", k)
			}
			got[k] = r
		}
	}
	for _, x := range as {
		clk.Set(x.at)
		collect(a.Add([]schemas.Reading{x.r}))
	}
	clk.Set(as[len(as)-1].at.Add(time.Hour))
	collect(a.Tick())
	return got, a
}

// jittered: readings at event times ts arrive within lateness, out of order.
func jittered(rng *rand.Rand, rs []schemas.Reading, lateness time.Duration) []arrival {
	as := make([]arrival, len(rs))
	for i, r := range rs {
		as[i] = arrival{r, time.Unix(0, r.TS+rng.Int64N(int64(lateness)))}
	}
	slices.SortStableFunc(as, func(a, b arrival) int { return a.at.Compare(b.at) })
	return as
}

func compare(t *testing.T, cfg Config, as []arrival) {
	t.Helper()
	got, a := run(t, cfg, as)
	want := reference(as, cfg.Windows)
	if len(got) != len(want) {
		t.Fatalf("%d windows emitted, want %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Fatalf("window %+v not emitted", k)
		}
		check(t, g, w)
	}
	if st := a.Stats(); st.LateReadings != 0 || st.OpenWindows != 0 {
		t.Errorf("stats %+v: want no late readings and no open windows", st)
	}
}

func TestMatchesReferenceRandom(t *testing.T) {
	cfg := DefaultConfig()
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			var rs []schemas.Reading
			for i := range 3000 {
				ts := t0.Add(time.Duration(i) * 97 * time.Millisecond)
				dev := fmt.Sprintf("d%d", rng.IntN(4))
				v := rng.NormFloat64()*10 + 20
				if rng.IntN(3) == 0 {
					v = -rng.ExpFloat64() * 100
				}
				rs = append(rs, rd(dev, []string{"temperature", "humidity"}[rng.IntN(2)], ts, v))
			}
			compare(t, cfg, jittered(rng, rs, cfg.AllowedLateness))
		})
	}
}

func TestMatchesReferenceAdversarial(t *testing.T) {
	cfg := DefaultConfig()
	rng := rand.New(rand.NewPCG(7, 7))
	at := func(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }
	tests := []struct {
		name string
		rs   []schemas.Reading
	}{
		{"single point", []schemas.Reading{rd("d", "m", at(3), 42)}},
		{"empty windows between", []schemas.Reading{rd("d", "m", at(1), 1), rd("d", "m", at(125), 2), rd("d", "m", at(600), 3)}},
		{"on window boundaries", []schemas.Reading{rd("d", "m", at(0), 1), rd("d", "m", at(10), 2), rd("d", "m", at(9.999999999), 3), rd("d", "m", at(60), 4)}},
		{"identical values", func() (rs []schemas.Reading) {
			for i := range 50 {
				rs = append(rs, rd("d", "m", at(float64(i)/10), 7.25))
			}
			return
		}()},
		// 30 decades need more sketch bins than the default 1024 (8.9 decades).
		{"huge and tiny", func() (rs []schemas.Reading) {
			for i := range 200 {
				v := []float64{1e15, 1e-15, -1e15, 3.5, -1e-12, 1e12 + 0.5}[i%6]
				rs = append(rs, rd("d", "m", at(float64(i)/20), v))
			}
			return
		}()},
		{"large offset small spread", func() (rs []schemas.Reading) {
			for i := range 300 {
				rs = append(rs, rd("d", "m", at(float64(i)/5), 1e9+rng.Float64()))
			}
			return
		}()},
		{"zeros and negatives", func() (rs []schemas.Reading) {
			for i := range 100 {
				rs = append(rs, rd("d", "m", at(float64(i)/7), float64(i%5-2)))
			}
			return
		}()},
		{"same timestamp", []schemas.Reading{rd("d", "m", at(4), 1), rd("d", "m", at(4), 2), rd("d", "m", at(4), 3)}},
	}
	wide := cfg
	wide.MaxSketchBins = 4096
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.name == "huge and tiny" {
				c = wide
			}
			compare(t, c, jittered(rng, tt.rs, cfg.AllowedLateness))
		})
	}
}

func TestHugeValuesStayFinite(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAgg(t, DefaultConfig(), clk)
	a.Add([]schemas.Reading{rd("d", "m", t0, math.MaxFloat64), rd("d", "m", t0, math.MaxFloat64), rd("d", "m", t0, -1e308)})
	clk.Set(t0.Add(time.Hour))
	out := a.Tick()
	if len(out) != 2 {
		t.Fatalf("%d windows", len(out))
	}
	r := out[0]
	rs, ok := r.AppendReadings(nil, schemas.EdgeID{Region: "r", Site: "s", Edge: "e"})
	if !ok {
		t.Fatal("not emitted")
	}
	for _, x := range rs {
		if err := x.Validate(); err != nil {
			t.Errorf("%s: %v", x.Metric, err)
		}
	}
	if r.Max != math.MaxFloat64 || r.Min != -1e308 || r.Count != 3 {
		t.Errorf("%+v", r)
	}
}

func TestWindowClosesOnClock(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Windows = []time.Duration{10 * time.Second}
	clk := &fakeClock{t: t0.Add(2 * time.Second)}
	a := newAgg(t, cfg, clk)
	if out := a.Add([]schemas.Reading{rd("d", "m", t0.Add(time.Second), 5), rd("d", "m", t0.Add(2*time.Second), 7)}); len(out) != 0 {
		t.Fatalf("emitted %v early", out)
	}
	// The window [0s,10s) closes when the watermark passes 10s + 5s
	// lateness: the series is silent, so the agent clock drives it.
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{{9 * time.Second, 0}, {14*time.Second + 999*time.Millisecond, 0}, {15 * time.Second, 1}, {30 * time.Second, 0}} {
		clk.Set(t0.Add(tc.at))
		if out := a.Tick(); len(out) != tc.want {
			t.Fatalf("at %v: %d windows, want %d", tc.at, len(out), tc.want)
		}
	}
}

func TestWindowClosesOnEventTime(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Windows = []time.Duration{10 * time.Second}
	clk := &fakeClock{t: t0}
	a := newAgg(t, cfg, clk)
	// A backlog arrives all at once: event time, not the clock, closes windows.
	var rs []schemas.Reading
	for i := range 40 {
		rs = append(rs, rd("d", "m", t0.Add(-time.Hour+time.Duration(i)*time.Second), float64(i)))
	}
	out := a.Add(rs)
	// Windows [0,10) and [10,20) of the backlog close (watermark 39s); [20,30) needs 35s: closed too; [30,40) stays open.
	if len(out) != 3 {
		t.Fatalf("%d windows, want 3", len(out))
	}
	if out[0].Count != 10 || out[0].Sum != 45 || a.Stats().LateReadings != 0 {
		t.Errorf("%+v %+v", out[0], a.Stats())
	}
}

func TestLateReadings(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Windows = []time.Duration{10 * time.Second}
	clk := &fakeClock{t: t0}
	a := newAgg(t, cfg, clk)
	a.Add([]schemas.Reading{rd("d", "m", t0.Add(time.Second), 1)})
	// Within lateness: merged (window [0,10) still open at watermark 14s).
	clk.Set(t0.Add(time.Second))
	out := a.Add([]schemas.Reading{rd("d", "m", t0.Add(14*time.Second), 100), rd("d", "m", t0.Add(9*time.Second), 2)})
	if len(out) != 0 {
		t.Fatalf("closed early: %+v", out)
	}
	// The watermark reaches 15s: [0,10) is emitted with 2 readings.
	out = a.Add([]schemas.Reading{rd("d", "m", t0.Add(15*time.Second), 100)})
	if len(out) != 1 || out[0].Count != 2 || out[0].Sum != 3 {
		t.Fatalf("got %+v", out)
	}
	// Too late now: counted, never merged, never re-emitted.
	out = a.Add([]schemas.Reading{rd("d", "m", t0.Add(3*time.Second), 50)})
	if len(out) != 0 || a.Stats().LateReadings != 1 {
		t.Fatalf("late reading: %+v %+v", out, a.Stats())
	}
	clk.Set(t0.Add(time.Hour))
	for _, r := range a.Tick() {
		if r.Start == t0.UnixNano() {
			t.Fatalf("window re-emitted: %+v", r)
		}
	}
}

func TestSeriesExpire(t *testing.T) {
	cfg := DefaultConfig()
	clk := &fakeClock{t: t0}
	a := newAgg(t, cfg, clk)
	a.Add([]schemas.Reading{rd("d", "m", t0, 1), rd("d2", "m", t0, 1)})
	clk.Set(t0.Add(2 * time.Minute))
	a.Tick()
	if st := a.Stats(); st.ActiveSeries != 2 || st.OpenWindows != 0 || st.ApproxBytes < 2*seriesFixedBytes {
		t.Fatalf("%+v", st)
	}
	clk.Set(t0.Add(cfg.SeriesIdle))
	a.Tick()
	if st := a.Stats(); st.ActiveSeries != 0 || st.ExpiredSeries != 2 {
		t.Fatalf("%+v", st)
	}
}

func TestMaxSeries(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxSeries = 2
	clk := &fakeClock{t: t0}
	a := newAgg(t, cfg, clk)
	a.Add([]schemas.Reading{rd("a", "m", t0, 1), rd("b", "m", t0, 1), rd("c", "m", t0, 1), rd("a", "m", t0, 2)})
	if st := a.Stats(); st.ActiveSeries != 2 || st.RejectedSeries != 1 || st.Readings != 3 {
		t.Fatalf("%+v", st)
	}
}

func TestReconfigure(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAgg(t, DefaultConfig(), clk)
	a.Add([]schemas.Reading{rd("d", "m", t0.Add(time.Second), 1), rd("d", "m", t0.Add(2*time.Second), 2)})
	bad := DefaultConfig()
	bad.Windows = []time.Duration{7 * time.Second}
	if _, err := a.Reconfigure(bad); err == nil {
		t.Fatal("a window that does not divide a day was accepted")
	}
	next := DefaultConfig()
	next.Windows = []time.Duration{10 * time.Second, 5 * time.Minute} // 1m removed, 5m added
	out, err := a.Reconfigure(next)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Window != time.Minute || out[0].Count != 2 {
		t.Fatalf("removed window flush: %+v", out)
	}
	a.Add([]schemas.Reading{rd("d", "m", t0.Add(3*time.Second), 3)})
	clk.Set(t0.Add(time.Hour))
	got := a.Tick()
	slices.SortFunc(got, func(x, y Result) int { return cmp.Compare(x.Window, y.Window) })
	if len(got) != 2 || got[0].Window != 10*time.Second || got[0].Count != 3 || got[1].Window != 5*time.Minute || got[1].Count != 1 {
		t.Fatalf("after reload: %+v", got)
	}
}

func TestAppendReadingsNames(t *testing.T) {
	r := Result{Device: "d", Metric: "temperature", Unit: "Cel", Window: time.Minute, Start: t0.UnixNano(), Count: 2,
		Min: 1, Max: 2, Sum: 3, Mean: 1.5, Last: 2, Stddev: 0.5, P50: 1, P90: 2, P99: 2}
	rs, ok := r.AppendReadings(nil, schemas.EdgeID{Region: "r", Site: "s", Edge: "e"})
	if !ok || len(rs) != len(schemas.Stats) {
		t.Fatalf("%d readings", len(rs))
	}
	for i, x := range rs {
		m, st, w, err := schemas.ParseAggregateMetric(x.Metric)
		if err != nil || m != "temperature" || st != schemas.Stats[i] || w != time.Minute || x.TS != r.Start {
			t.Errorf("%+v: %v", x, err)
		}
		if (st == schemas.StatCount) != (x.Unit == "") {
			t.Errorf("%s unit %q", st, x.Unit)
		}
		if err := x.Validate(); err != nil {
			t.Error(err)
		}
	}
	r.P99 = math.NaN()
	if rs, _ := r.AppendReadings(nil, schemas.EdgeID{Region: "r", Site: "s", Edge: "e"}); len(rs) != len(schemas.Stats)-1 {
		t.Errorf("NaN p99 emitted")
	}
}
