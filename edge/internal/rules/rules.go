// Package rules evaluates the agent's declarative alert rules (threshold,
// rate of change, absence, window aggregate) on readings as they arrive and
// reports each firing/resolved transition exactly once.
package rules

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/updraft-io/updraft/edge/internal/aggregate"
	"github.com/updraft-io/updraft/schemas"
)

// Alert states.
const (
	StateFiring   = "firing"
	StateResolved = "resolved"
)

// Alert is one transition of one rule for one series, as published (JSON)
// on the local broker and as an event.
type Alert struct {
	Rule     string `json:"rule"`
	Kind     string `json:"kind"`
	State    string `json:"state"`
	Severity string `json:"severity,omitempty"`
	Region   string `json:"region"`
	Site     string `json:"site"`
	Edge     string `json:"edge"`
	Device   string `json:"device"`
	Metric   string `json:"metric,omitempty"`
	// Value is what the rule looked at: the reading, the rate per second,
	// the window statistic, or the seconds of silence.
	Value     float64 `json:"value"`
	Condition string  `json:"condition"`
	// EventTime is the time of the reading or window start that caused the
	// transition (absent for absence rules); At is the agent clock.
	EventTime *time.Time `json:"event_time,omitempty"`
	At        time.Time  `json:"at"`
	Reason    string     `json:"reason,omitempty"`
}

// Engine holds the rules and each series' alert state. Its methods are safe
// from many goroutines.
type Engine struct {
	mu    sync.Mutex
	edge  schemas.EdgeID
	now   func() time.Time
	rules []Rule
	byMet map[string][]int // metric -> rules watching it (not absence)
	state map[key]*state
	since time.Time // when the rules came into force (absence of named devices)
}

type key struct {
	rule           string
	device, metric string
}

type state struct {
	firing bool
	// rate: the previous reading of the series.
	prevTS int64
	prevV  float64
	seen   bool
	// absence: last arrival (agent clock).
	lastAt time.Time
}

// New compiles rules (validated with Validate) for edge. now is the agent
// clock (nil = time.Now).
func New(rs []Rule, windows []time.Duration, edge schemas.EdgeID, now func() time.Time) (*Engine, error) {
	if now == nil {
		now = time.Now
	}
	e := &Engine{edge: edge, now: now, state: map[key]*state{}}
	if err := e.Reconfigure(rs, windows); err != nil {
		return nil, err
	}
	return e, nil
}

// Rules returns the rules in force.
func (e *Engine) Rules() []Rule {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.rules)
}

// Reconfigure replaces the rules after validating them; on error the old
// rules stay in force. Unchanged rules (same name and definition) keep their
// state; an alert firing under a rule that was removed or changed is
// reported resolved (reason "rule changed").
func (e *Engine) Reconfigure(rs []Rule, windows []time.Duration) error {
	_, err := e.reconfigure(rs, windows)
	return err
}

// ReconfigureAlerts is Reconfigure that also returns the resolutions.
func (e *Engine) ReconfigureAlerts(rs []Rule, windows []time.Duration) ([]Alert, error) {
	return e.reconfigure(rs, windows)
}

func (e *Engine) reconfigure(rs []Rule, windows []time.Duration) ([]Alert, error) {
	if err := Validate(rs, windows); err != nil {
		return nil, err
	}
	rs = slices.Clone(rs)
	e.mu.Lock()
	defer e.mu.Unlock()
	keep := map[string]bool{}
	for _, n := range rs {
		for _, o := range e.rules {
			if n.Name == o.Name && reflect.DeepEqual(n, o) {
				keep[n.Name] = true
			}
		}
	}
	var out []Alert
	now := e.now()
	old := map[string]*Rule{}
	for i := range e.rules {
		old[e.rules[i].Name] = &e.rules[i]
	}
	for k, s := range e.state {
		if keep[k.rule] {
			continue
		}
		if s.firing {
			a := e.alert(old[k.rule], k, StateResolved, math.NaN(), nil, now)
			a.Reason = "rule changed"
			out = append(out, a)
		}
		delete(e.state, k)
	}
	e.rules = rs
	e.byMet = map[string][]int{}
	for i, r := range rs {
		if r.Kind == KindThreshold || r.Kind == KindRate {
			e.byMet[r.Metric] = append(e.byMet[r.Metric], i)
		}
	}
	e.since = now
	return out, nil
}

func (e *Engine) alert(r *Rule, k key, st string, v float64, ts *int64, now time.Time) Alert {
	a := Alert{Rule: r.Name, Kind: r.Kind, State: st, Severity: r.Severity, Region: e.edge.Region, Site: e.edge.Site,
		Edge: e.edge.Edge, Device: k.device, Metric: k.metric, Value: v, Condition: condition(r), At: now.UTC()}
	if math.IsNaN(v) {
		a.Value = 0
	}
	if ts != nil {
		t := time.Unix(0, *ts).UTC()
		a.EventTime = &t
	}
	return a
}

func condition(r *Rule) string {
	what := "value"
	switch r.Kind {
	case KindRate:
		what = "rate/s"
	case KindWindow:
		what = r.Stat + " over " + schemas.FormatWindow(r.Window)
	case KindAbsence:
		return "silent for " + r.For.String()
	}
	switch {
	case r.Above != nil && r.Below != nil:
		return fmt.Sprintf("%s outside [%g, %g]", what, *r.Below, *r.Above)
	case r.Above != nil:
		return fmt.Sprintf("%s above %g", what, *r.Above)
	default:
		return fmt.Sprintf("%s below %g", what, *r.Below)
	}
}

// breach: the value is outside the rule's limits.
func breach(r *Rule, v float64) bool {
	return (r.Above != nil && v > *r.Above) || (r.Below != nil && v < *r.Below)
}

// backInside: the value is back inside by the hysteresis.
func backInside(r *Rule, v float64) bool {
	return (r.Above == nil || v <= *r.Above-r.Hysteresis) && (r.Below == nil || v >= *r.Below+r.Hysteresis)
}

// step moves a series' state on an observed value and reports a transition.
func (e *Engine) step(out []Alert, r *Rule, k key, s *state, v float64, ts int64, now time.Time) []Alert {
	switch {
	case !s.firing && breach(r, v):
		s.firing = true
		out = append(out, e.alert(r, k, StateFiring, v, &ts, now))
	case s.firing && backInside(r, v):
		s.firing = false
		out = append(out, e.alert(r, k, StateResolved, v, &ts, now))
	}
	return out
}

func (e *Engine) get(k key) *state {
	s := e.state[k]
	if s == nil {
		s = &state{}
		e.state[k] = s
	}
	return s
}

// Observe evaluates threshold, rate and absence rules on readings as they
// arrive and returns the transitions, in order.
func (e *Engine) Observe(rs []schemas.Reading) []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var out []Alert
	for i := range rs {
		x := &rs[i]
		for _, ri := range e.byMet[x.Metric] {
			r := &e.rules[ri]
			if !r.anyDevice() && r.Device != x.Device {
				continue
			}
			k := key{r.Name, x.Device, x.Metric}
			s := e.get(k)
			switch r.Kind {
			case KindThreshold:
				out = e.step(out, r, k, s, x.Value, x.TS, now)
			case KindRate:
				// Out-of-order and same-time readings carry no rate.
				if s.seen && x.TS > s.prevTS {
					rate := (x.Value - s.prevV) / (float64(x.TS-s.prevTS) / 1e9)
					out = e.step(out, r, k, s, rate, x.TS, now)
				}
				if !s.seen || x.TS > s.prevTS {
					s.prevTS, s.prevV, s.seen = x.TS, x.Value, true
				}
			}
		}
		for ri := range e.rules {
			r := &e.rules[ri]
			if r.Kind != KindAbsence || (!r.anyDevice() && r.Device != x.Device) || (r.Metric != "" && r.Metric != x.Metric) {
				continue
			}
			k := key{r.Name, x.Device, r.Metric}
			s := e.get(k)
			s.lastAt = now
			if s.firing {
				s.firing = false
				out = append(out, e.alert(r, k, StateResolved, 0, &x.TS, now))
			}
		}
	}
	return out
}

// ObserveWindows evaluates window rules on closed windows.
func (e *Engine) ObserveWindows(ws []aggregate.Result) []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var out []Alert
	for i := range ws {
		w := &ws[i]
		for ri := range e.rules {
			r := &e.rules[ri]
			if r.Kind != KindWindow || r.Window != w.Window || r.Metric != w.Metric || (!r.anyDevice() && r.Device != w.Device) {
				continue
			}
			v, ok := w.Stat(r.Stat)
			if !ok {
				continue
			}
			k := key{r.Name, w.Device, w.Metric}
			out = e.step(out, r, k, e.get(k), v, w.Start, now)
		}
	}
	return out
}

// Tick evaluates absence rules against the agent clock. A rule naming a
// device watches it from the moment the rule came into force; a rule for
// every device watches each device from its first reading.
func (e *Engine) Tick() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var out []Alert
	for ri := range e.rules {
		r := &e.rules[ri]
		if r.Kind != KindAbsence || r.anyDevice() {
			continue
		}
		k := key{r.Name, r.Device, r.Metric}
		if _, ok := e.state[k]; !ok {
			e.state[k] = &state{lastAt: e.since}
		}
	}
	for k, s := range e.state {
		if s.firing || s.lastAt.IsZero() {
			continue
		}
		r := e.rule(k.rule)
		if r == nil || r.Kind != KindAbsence {
			continue
		}
		if silent := now.Sub(s.lastAt); silent >= r.For {
			s.firing = true
			out = append(out, e.alert(r, k, StateFiring, silent.Seconds(), nil, now))
		}
	}
	return out
}

func (e *Engine) rule(name string) *Rule {
	for i := range e.rules {
		if e.rules[i].Name == name {
			return &e.rules[i]
		}
	}
	return nil
}

// Firing returns the alerts currently firing (state only: Value and times
// are not kept).
func (e *Engine) Firing() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Alert
	for k, s := range e.state {
		if s.firing {
			if r := e.rule(k.rule); r != nil {
				out = append(out, e.alert(r, k, StateFiring, math.NaN(), nil, e.now()))
			}
		}
	}
	slices.SortFunc(out, func(a, b Alert) int {
		if a.Rule != b.Rule {
			if a.Rule < b.Rule {
				return -1
			}
			return 1
		}
		if a.Device < b.Device {
			return -1
		}
		if a.Device > b.Device {
			return 1
		}
		return 0
	})
	return out
}
