package rules

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/updraft-io/updraft/edge/internal/aggregate"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	t0      = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	edge    = schemas.EdgeID{Region: "r", Site: "s", Edge: "e"}
	windows = []time.Duration{10 * time.Second, time.Minute}
)

func f(v float64) *float64 { return &v }

func rd(dev, met string, sec float64, v float64) schemas.Reading {
	return schemas.Reading{Region: "r", Site: "s", Edge: "e", Device: dev, Metric: met,
		TS: t0.Add(time.Duration(sec * float64(time.Second))).UnixNano(), Value: v}
}

func newEngine(t *testing.T, clk *fakeClock, rs ...Rule) *Engine {
	t.Helper()
	e, err := New(rs, windows, edge, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// states renders transitions compactly: "rule/device:firing".
func states(as []Alert) string {
	var b []string
	for _, a := range as {
		b = append(b, a.Rule+"/"+a.Device+":"+a.State)
	}
	return strings.Join(b, " ")
}

func TestThresholdHysteresis(t *testing.T) {
	tests := []struct {
		name   string
		rule   Rule
		values []float64
		want   []string // transitions after each value ("" none)
	}{
		{"above", Rule{Name: "hot", Kind: KindThreshold, Metric: "t", Above: f(30), Hysteresis: 2},
			[]float64{29, 31, 32, 29, 28.5, 31, 28, 27, 31},
			[]string{"", "hot/d:firing", "", "", "", "", "hot/d:resolved", "", "hot/d:firing"}},
		{"below", Rule{Name: "cold", Kind: KindThreshold, Metric: "t", Below: f(5), Hysteresis: 1},
			[]float64{6, 4.9, 5.5, 6, 4},
			[]string{"", "cold/d:firing", "", "cold/d:resolved", "cold/d:firing"}},
		{"band", Rule{Name: "band", Kind: KindThreshold, Metric: "t", Below: f(10), Above: f(20), Hysteresis: 1},
			[]float64{15, 21, 19.5, 19, 9, 10.5, 11},
			[]string{"", "band/d:firing", "", "band/d:resolved", "band/d:firing", "", "band/d:resolved"}},
		{"no hysteresis at the limit", Rule{Name: "eq", Kind: KindThreshold, Metric: "t", Above: f(30)},
			[]float64{30, 30.1, 30, 30.1},
			[]string{"", "eq/d:firing", "eq/d:resolved", "eq/d:firing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: t0}
			e := newEngine(t, clk, tt.rule)
			for i, v := range tt.values {
				got := states(e.Observe([]schemas.Reading{rd("d", "t", float64(i), v)}))
				if got != tt.want[i] {
					t.Fatalf("value %d (%v): %q, want %q", i, v, got, tt.want[i])
				}
			}
		})
	}
}

func TestThresholdPerDeviceAndMetric(t *testing.T) {
	clk := &fakeClock{t: t0}
	e := newEngine(t, clk, Rule{Name: "hot", Kind: KindThreshold, Device: "d1", Metric: "t", Above: f(30)},
		Rule{Name: "any", Kind: KindThreshold, Metric: "t", Above: f(40)})
	got := states(e.Observe([]schemas.Reading{rd("d1", "t", 0, 35), rd("d2", "t", 0, 35), rd("d2", "h", 0, 99), rd("d2", "t", 1, 45), rd("d1", "t", 1, 45)}))
	if want := "hot/d1:firing any/d2:firing any/d1:firing"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	a := e.Observe([]schemas.Reading{rd("d2", "t", 2, 10)})
	if len(a) != 1 || a[0].EventTime == nil || !a[0].EventTime.Equal(t0.Add(2*time.Second)) || a[0].Value != 10 ||
		a[0].Condition != "value above 40" || a[0].Region != "r" || a[0].Metric != "t" {
		t.Fatalf("%+v", a)
	}
	if got := states(e.Firing()); got != "any/d1:firing hot/d1:firing" {
		t.Errorf("firing: %q", got)
	}
}

func TestRate(t *testing.T) {
	clk := &fakeClock{t: t0}
	e := newEngine(t, clk, Rule{Name: "jump", Kind: KindRate, Metric: "p", Above: f(1), Hysteresis: 0.5})
	steps := []struct {
		sec, v float64
		want   string
	}{
		{0, 10, ""},
		{1, 10.5, ""},            // 0.5/s
		{2, 12, "jump/d:firing"}, // 1.5/s
		{1.5, 100, ""},           // out of order: no rate
		{3, 13.2, ""},            // 1.2/s, still firing
		{4, 13.8, ""},            // 0.6/s: inside but not by the hysteresis
		{6, 14.2, "jump/d:resolved"},
	}
	for i, s := range steps {
		if got := states(e.Observe([]schemas.Reading{rd("d", "p", s.sec, s.v)})); got != s.want {
			t.Fatalf("step %d: %q, want %q", i, got, s.want)
		}
	}
}

func TestAbsence(t *testing.T) {
	clk := &fakeClock{t: t0}
	e := newEngine(t, clk, Rule{Name: "silent", Kind: KindAbsence, For: 30 * time.Second},
		Rule{Name: "pump", Kind: KindAbsence, Device: "pump-1", Metric: "flow", For: time.Minute})
	e.Observe([]schemas.Reading{rd("d", "t", 0, 1)})
	clk.Advance(29 * time.Second)
	if got := states(e.Tick()); got != "" {
		t.Fatalf("fired early: %q", got)
	}
	clk.Advance(time.Second)
	if got := states(e.Tick()); got != "silent/d:firing" {
		t.Fatalf("at 30s: %q", got)
	}
	clk.Advance(10 * time.Second)
	if got := states(e.Tick()); got != "" {
		t.Fatalf("fired twice: %q", got)
	}
	// A named device never heard from fires one minute after the rule came into force.
	clk.Advance(20 * time.Second)
	if got := states(e.Tick()); got != "pump/pump-1:firing" {
		t.Fatalf("at 60s: %q", got)
	}
	// pump-1's flow resolves pump, and starts silent for pump-1.
	got := states(e.Observe([]schemas.Reading{rd("d", "t", 60, 2), rd("pump-1", "flow", 60, 3)}))
	if got != "silent/d:resolved pump/pump-1:resolved" {
		t.Fatalf("readings: %q", got)
	}
	clk.Advance(30 * time.Second)
	if got := states(e.Tick()); got != "silent/d:firing silent/pump-1:firing" && got != "silent/pump-1:firing silent/d:firing" {
		t.Fatalf("again: %q", got)
	}
}

func TestWindowRule(t *testing.T) {
	clk := &fakeClock{t: t0}
	e := newEngine(t, clk, Rule{Name: "warm", Kind: KindWindow, Metric: "t", Window: time.Minute, Stat: schemas.StatMean, Above: f(25), Hysteresis: 1})
	w := func(win time.Duration, mean float64) []aggregate.Result {
		return []aggregate.Result{{Device: "d", Metric: "t", Window: win, Start: t0.UnixNano(), Count: 1, Mean: mean}}
	}
	for i, s := range []struct {
		r    []aggregate.Result
		want string
	}{
		{w(time.Minute, 24), ""},
		{w(10*time.Second, 30), ""}, // other window size
		{w(time.Minute, 26), "warm/d:firing"},
		{w(time.Minute, 24.5), ""},
		{w(time.Minute, 23.9), "warm/d:resolved"},
	} {
		if got := states(e.ObserveWindows(s.r)); got != s.want {
			t.Fatalf("step %d: %q, want %q", i, got, s.want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		rule Rule
		key  string
	}{
		{Rule{Name: "", Kind: KindThreshold, Metric: "t", Above: f(1)}, "rules[0].name"},
		{Rule{Name: "a.b", Kind: KindThreshold, Metric: "t", Above: f(1)}, "rules[0].name"},
		{Rule{Name: "x", Kind: "sometimes", Metric: "t"}, "rules[0].kind"},
		{Rule{Name: "x", Kind: KindThreshold, Metric: "t"}, "rules[0].above"},
		{Rule{Name: "x", Kind: KindThreshold, Metric: ""}, "rules[0].metric"},
		{Rule{Name: "x", Kind: KindThreshold, Metric: "t", Above: f(1), Below: f(2)}, "rules[0].below"},
		{Rule{Name: "x", Kind: KindThreshold, Metric: "t", Above: f(2), Below: f(1), Hysteresis: 0.5}, "rules[0].hysteresis"},
		{Rule{Name: "x", Kind: KindThreshold, Metric: "t", Above: f(2), Hysteresis: -1}, "rules[0].hysteresis"},
		{Rule{Name: "x", Kind: KindAbsence}, "rules[0].for"},
		{Rule{Name: "x", Kind: KindWindow, Metric: "t", Above: f(1), Window: 5 * time.Minute, Stat: "mean"}, "rules[0].window"},
		{Rule{Name: "x", Kind: KindWindow, Metric: "t", Above: f(1), Window: time.Minute, Stat: "median"}, "rules[0].stat"},
		{Rule{Name: "x", Kind: KindThreshold, Metric: "t", Above: f(1), Stat: "mean"}, "rules[0].window"},
	}
	for _, tt := range tests {
		err := Validate([]Rule{tt.rule}, windows)
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != tt.key {
			t.Errorf("%+v: %v, want an error on %s", tt.rule, err, tt.key)
		}
	}
	dup := []Rule{{Name: "x", Kind: KindAbsence, For: time.Second}, {Name: "x", Kind: KindAbsence, For: time.Second}}
	if err := Validate(dup, windows); err == nil || !strings.Contains(err.Error(), "rules[1].name") {
		t.Errorf("duplicate names: %v", err)
	}
}

func TestReconfigure(t *testing.T) {
	clk := &fakeClock{t: t0}
	hot := Rule{Name: "hot", Kind: KindThreshold, Metric: "t", Above: f(30)}
	cold := Rule{Name: "cold", Kind: KindThreshold, Metric: "t", Below: f(0)}
	e := newEngine(t, clk, hot, cold)
	e.Observe([]schemas.Reading{rd("d", "t", 0, 40)})
	// An invalid set is refused and the old rules keep running.
	if _, err := e.ReconfigureAlerts([]Rule{{Name: "bad", Kind: KindThreshold, Metric: "t"}}, windows); err == nil {
		t.Fatal("invalid rules accepted")
	}
	if got := states(e.Observe([]schemas.Reading{rd("d", "t", 1, -5)})); got != "hot/d:resolved cold/d:firing" {
		t.Fatalf("old rules after a refused reload: %q", got)
	}
	// Unchanged cold keeps its state (no new firing); changed hot restarts.
	hot2 := hot
	hot2.Above = f(35)
	res, err := e.ReconfigureAlerts([]Rule{hot2, cold}, windows)
	if err != nil || len(res) != 0 {
		t.Fatalf("%v %v", res, err)
	}
	if got := states(e.Observe([]schemas.Reading{rd("d", "t", 2, -6), rd("d", "t", 3, 36)})); got != "hot/d:firing cold/d:resolved" {
		t.Fatalf("after reload: %q", got)
	}
	res, _ = e.ReconfigureAlerts([]Rule{cold}, windows)
	if len(res) != 1 || res[0].State != StateResolved || res[0].Reason != "rule changed" || res[0].Rule != "hot" {
		t.Fatalf("removing a firing rule: %+v", res)
	}
}

func BenchmarkObserve(b *testing.B) {
	clk := &fakeClock{t: t0}
	e, _ := New([]Rule{{Name: "hot", Kind: KindThreshold, Metric: "t", Above: f(30), Hysteresis: 1},
		{Name: "jump", Kind: KindRate, Metric: "t", Above: f(5)},
		{Name: "silent", Kind: KindAbsence, For: time.Minute}}, windows, edge, clk.Now)
	rs := []schemas.Reading{rd("d", "t", 0, 20)}
	b.ReportAllocs()
	for i := range b.N {
		rs[0].TS += int64(time.Millisecond)
		rs[0].Value = float64(i % 40)
		e.Observe(rs)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}
