// Package aggregate computes event-time tumbling window aggregates per
// (device, metric) at the edge: count, min, max, sum, mean, last, standard
// deviation and p50/p90/p99 from a DDSketch with 1% relative accuracy.
//
// An Aggregator is a state machine: Add and Tick return the windows they
// close, and the caller decides where those go (buffer, broker, HTTP API,
// rules). See docs/aggregation.md for windows, lateness and the watermark.
package aggregate

import (
	"math"
	"sync"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"

	"github.com/updraft-io/updraft/schemas"
)

// RelativeAccuracy of every quantile: an estimate q̂ of the exact sample
// quantile x satisfies |q̂ - x| <= RelativeAccuracy * |x|.
const RelativeAccuracy = 0.01

// Quantiles computed for every window, in the order of P50, P90, P99.
var Quantiles = [3]float64{0.5, 0.9, 0.99}

// Result is one closed window of one series.
type Result struct {
	Device, Metric, Unit string
	Window               time.Duration
	// Start is the window start in ns since the Unix epoch (UTC); the window
	// is [Start, Start+Window).
	Start int64
	Count int64
	Min   float64
	Max   float64
	Sum   float64
	Mean  float64
	// Last is the value of the reading with the greatest event time (on a
	// tie, the one that arrived last); LastTS its time.
	Last   float64
	LastTS int64
	// Stddev is the population standard deviation.
	Stddev float64
	// P50, P90, P99 are NaN when a value in the window was beyond the
	// sketch's range (|x| > 1e307) and the quantiles would be wrong.
	P50, P90, P99 float64
}

// End is the end of the window (exclusive), ns.
func (r *Result) End() int64 { return r.Start + int64(r.Window) }

// Stat returns one statistic by its schemas name.
func (r *Result) Stat(stat string) (float64, bool) {
	var v float64
	switch stat {
	case schemas.StatCount:
		v = float64(r.Count)
	case schemas.StatMin:
		v = r.Min
	case schemas.StatMax:
		v = r.Max
	case schemas.StatSum:
		v = r.Sum
	case schemas.StatMean:
		v = r.Mean
	case schemas.StatLast:
		v = r.Last
	case schemas.StatStddev:
		v = r.Stddev
	case schemas.StatP50:
		v = r.P50
	case schemas.StatP90:
		v = r.P90
	case schemas.StatP99:
		v = r.P99
	default:
		return 0, false
	}
	return v, !math.IsNaN(v) && !math.IsInf(v, 0)
}

// AppendReadings appends the window as aggregate readings per the schemas
// naming contract: one reading per statistic, metric
// "<metric>:<stat>:<window>", TS the window start. A statistic that is not
// finite (a sum that overflowed, quantiles out of the sketch's range) is
// left out, as is every statistic when the name would exceed
// schemas.MaxTokenLen; the second result reports that.
func (r *Result) AppendReadings(dst []schemas.Reading, edge schemas.EdgeID) ([]schemas.Reading, bool) {
	win := schemas.FormatWindow(r.Window)
	if len(r.Metric)+len(":stddev:")+len(win) > schemas.MaxTokenLen {
		return dst, false
	}
	for _, st := range schemas.Stats {
		v, ok := r.Stat(st)
		if !ok {
			continue
		}
		unit := r.Unit
		if st == schemas.StatCount {
			unit = ""
		}
		dst = append(dst, schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge, Device: r.Device,
			Metric: r.Metric + ":" + st + ":" + win, TS: r.Start, Value: v, Unit: unit})
	}
	return dst, true
}

// Stats are the aggregator's counters.
type Stats struct {
	ActiveSeries   int    `json:"active_series"`
	OpenWindows    int    `json:"open_windows"`
	Readings       uint64 `json:"readings"`
	LateReadings   uint64 `json:"late_readings"`
	Windows        uint64 `json:"windows_emitted"`
	ExpiredSeries  uint64 `json:"expired_series"`
	RejectedSeries uint64 `json:"rejected_series"` // readings of new series refused at max_series
	// ApproxBytes estimates the memory held by the series, their open
	// windows (sketch bins included) and the windows kept for reuse, as of
	// the last Tick.
	ApproxBytes int64 `json:"approx_bytes"`
	// MaxBytesPerWindow bounds the memory of one open window (sketch at
	// max_sketch_bins on both signs plus fixed state); MaxBytes bounds the
	// whole aggregator at max_series.
	MaxBytesPerWindow int64 `json:"max_bytes_per_window"`
	MaxBytes          int64 `json:"max_bytes"`
}

// Aggregator holds the open windows. Its methods are safe from many
// goroutines.
type Aggregator struct {
	mu     sync.Mutex
	cfg    Config
	now    func() time.Time
	mp     mapping.IndexMapping
	series map[seriesKey]*series
	free   []*window
	st     Stats
}

type seriesKey struct{ device, metric string }

type series struct {
	unit string
	// maxTS is the newest event time seen and maxAt when it arrived (agent
	// clock, ns): the watermark is maxTS + (now - maxAt).
	maxTS, maxAt int64
	lastAt       int64 // last arrival, for expiry
	per          []perSize
}

// perSize is a series' state for one window size.
type perSize struct {
	closedUntil int64     // windows starting before this were emitted
	open        []*window // ascending start
}

type window struct {
	start       int64
	n           int64
	min, max    float64
	sum, comp   float64 // Neumaier compensated sum
	mean, m2    float64 // Welford
	last        float64
	lastTS      int64
	sk          *ddsketch.DDSketch
	untrackable bool
}

// New returns an aggregator for cfg (validated by the caller; see
// Config.Validate). now is the agent clock; nil means time.Now.
func New(cfg Config, now func() time.Time) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	mp, err := mapping.NewLogarithmicMapping(RelativeAccuracy)
	if err != nil {
		return nil, err
	}
	return &Aggregator{cfg: cfg, now: now, mp: mp, series: map[seriesKey]*series{}}, nil
}

// Config returns the configuration in force.
func (a *Aggregator) Config() Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// Reconfigure applies a new configuration without losing data: window sizes
// kept keep their open windows; a removed size emits its open windows now
// (they hold every reading they received) and they are returned; a new size
// starts with the next reading.
func (a *Aggregator) Reconfigure(cfg Config) ([]Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Result
	for k, s := range a.series {
		per := make([]perSize, len(cfg.Windows))
		for i, w := range cfg.Windows {
			for j, old := range a.cfg.Windows {
				if old == w {
					per[i] = s.per[j]
				}
			}
		}
		for j, old := range a.cfg.Windows {
			kept := false
			for _, w := range cfg.Windows {
				kept = kept || w == old
			}
			if !kept {
				for _, w := range s.per[j].open {
					out = append(out, a.result(k, s, old, w))
					a.release(w)
				}
			}
		}
		s.per = per
	}
	if cfg.MaxSketchBins != a.cfg.MaxSketchBins {
		a.free = nil // pooled sketches have the old bound
	}
	a.cfg = cfg
	return out, nil
}

func floorDiv(ts, size int64) int64 {
	q := ts / size
	if ts%size < 0 {
		q--
	}
	return q * size
}

// Add merges readings into their windows and returns the windows that the
// readings' watermark closed. A reading whose window was already emitted
// (or is older than the watermark allows) is counted as late and not
// merged (Stats.LateReadings). Readings of a new series beyond max_series
// are not aggregated.
func (a *Aggregator) Add(rs []schemas.Reading) []Result {
	if len(rs) == 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now().UnixNano()
	var out []Result
	late := int64(a.cfg.AllowedLateness)
	for i := range rs {
		r := &rs[i]
		k := seriesKey{r.Device, r.Metric}
		s := a.series[k]
		if s == nil {
			if len(a.series) >= a.cfg.MaxSeries {
				a.st.RejectedSeries++
				continue
			}
			s = &series{maxTS: r.TS, maxAt: now, per: make([]perSize, len(a.cfg.Windows))}
			a.series[k] = s
		}
		a.st.Readings++
		s.unit = r.Unit
		s.lastAt = now
		if r.TS > s.maxTS {
			s.maxTS, s.maxAt = r.TS, now
		}
		wm := s.maxTS + (now - s.maxAt)
		isLate := false
		for j, size := range a.cfg.Windows {
			p := &s.per[j]
			sz := int64(size)
			start := floorDiv(r.TS, sz)
			if start < p.closedUntil || start+sz+late <= wm {
				isLate = true
				continue
			}
			w := a.openWindow(p, start)
			w.add(r.TS, r.Value)
		}
		if isLate {
			a.st.LateReadings++
		}
		out = a.closeSeries(out, k, s, wm)
	}
	return out
}

// openWindow finds or creates the window of p starting at start.
func (a *Aggregator) openWindow(p *perSize, start int64) *window {
	i := len(p.open)
	for i > 0 && p.open[i-1].start >= start {
		if p.open[i-1].start == start {
			return p.open[i-1]
		}
		i--
	}
	w := a.alloc(start)
	p.open = append(p.open, nil)
	copy(p.open[i+1:], p.open[i:])
	p.open[i] = w
	return w
}

func (a *Aggregator) alloc(start int64) *window {
	var w *window
	if n := len(a.free); n > 0 {
		w, a.free = a.free[n-1], a.free[:n-1]
		sk := w.sk
		sk.Clear()
		*w = window{sk: sk}
	} else {
		bins := a.cfg.MaxSketchBins
		w = &window{sk: ddsketch.NewDDSketch(a.mp, store.NewCollapsingLowestDenseStore(bins), store.NewCollapsingLowestDenseStore(bins))}
	}
	w.start = start
	a.st.OpenWindows++
	return w
}

// maxFree bounds the windows kept for reuse.
const maxFree = 4096

func (a *Aggregator) release(w *window) {
	a.st.OpenWindows--
	if len(a.free) < maxFree {
		a.free = append(a.free, w)
	}
}

func (w *window) add(ts int64, v float64) {
	if w.n == 0 {
		w.min, w.max, w.last, w.lastTS = v, v, v, ts
	} else {
		w.min, w.max = min(w.min, v), max(w.max, v)
		if ts >= w.lastTS {
			w.last, w.lastTS = v, ts
		}
	}
	w.n++
	// Neumaier: the running compensation keeps the sum exact to within an
	// ulp or so even when huge and tiny values mix.
	t := w.sum + v
	if math.Abs(w.sum) >= math.Abs(v) {
		w.comp += (w.sum - t) + v
	} else {
		w.comp += (v - t) + w.sum
	}
	w.sum = t
	d := v - w.mean
	w.mean += d / float64(w.n)
	w.m2 += d * (v - w.mean)
	if w.sk.Add(v) != nil {
		w.untrackable = true
	}
}

// closeSeries emits the windows of s that end at or before wm - lateness.
func (a *Aggregator) closeSeries(out []Result, k seriesKey, s *series, wm int64) []Result {
	late := int64(a.cfg.AllowedLateness)
	for j, size := range a.cfg.Windows {
		p := &s.per[j]
		sz := int64(size)
		n := 0
		for n < len(p.open) && p.open[n].start+sz+late <= wm {
			w := p.open[n]
			out = append(out, a.result(k, s, size, w))
			p.closedUntil = w.start + sz
			a.release(w)
			n++
		}
		if n > 0 {
			p.open = append(p.open[:0], p.open[n:]...)
		}
		// Everything before the watermark's closed boundary is final, even
		// windows that never opened: a reading for them is late.
		if c := floorDiv(wm-late, sz); c > p.closedUntil {
			p.closedUntil = c
		}
	}
	return out
}

func (a *Aggregator) result(k seriesKey, s *series, size time.Duration, w *window) Result {
	a.st.Windows++
	r := Result{Device: k.device, Metric: k.metric, Unit: s.unit, Window: size, Start: w.start, Count: w.n,
		Min: w.min, Max: w.max, Sum: w.sum + w.comp, Last: w.last, LastTS: w.lastTS,
		P50: math.NaN(), P90: math.NaN(), P99: math.NaN()}
	r.Mean = r.Sum / float64(w.n)
	if math.IsInf(r.Sum, 0) || math.IsNaN(r.Sum) {
		r.Mean = w.mean
	}
	r.Mean = min(max(r.Mean, w.min), w.max)
	r.Stddev = math.Sqrt(w.m2 / float64(w.n))
	if !w.untrackable {
		for i, q := range Quantiles {
			v, err := w.sk.GetValueAtQuantile(q)
			if err != nil {
				continue
			}
			// The exact quantile lies in [min, max]: clamping only brings
			// the estimate closer.
			v = min(max(v, w.min), w.max)
			switch i {
			case 0:
				r.P50 = v
			case 1:
				r.P90 = v
			case 2:
				r.P99 = v
			}
		}
	}
	return r
}

// Tick advances every series' watermark to the agent clock, emits the
// windows it closes, and forgets series silent for series_idle. The agent
// calls it periodically so that windows of a series that went silent close
// (allowed_lateness after their end, by the agent clock).
func (a *Aggregator) Tick() []Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now().UnixNano()
	idle := int64(a.cfg.SeriesIdle)
	var out []Result
	bytes := int64(0)
	for k, s := range a.series {
		out = a.closeSeries(out, k, s, s.maxTS+(now-s.maxAt))
		if now-s.lastAt >= idle && s.openWindows() == 0 {
			delete(a.series, k)
			a.st.ExpiredSeries++
			continue
		}
		bytes += seriesFixedBytes + int64(len(k.device)+len(k.metric)+len(s.unit))
		for i := range s.per {
			for _, w := range s.per[i].open {
				bytes += w.bytes()
			}
		}
	}
	for _, w := range a.free {
		bytes += w.bytes()
	}
	a.st.ApproxBytes = bytes
	return out
}

// bytes estimates a window's memory: fixed state plus the sketch's bins
// (a dense store holds its index span plus 64 bins, 8 bytes each).
func (w *window) bytes() int64 {
	n := int64(windowFixedBytes)
	for _, st := range []store.Store{w.sk.GetPositiveValueStore(), w.sk.GetNegativeValueStore()} {
		lo, err1 := st.MinIndex()
		hi, err2 := st.MaxIndex()
		if err1 == nil && err2 == nil {
			n += int64(hi-lo+64) * 8
		}
	}
	return n
}

func (s *series) openWindows() int {
	n := 0
	for i := range s.per {
		n += len(s.per[i].open)
	}
	return n
}

// Stats returns the counters.
func (a *Aggregator) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	st.ActiveSeries = len(a.series)
	st.MaxBytesPerWindow = int64(2*a.cfg.MaxSketchBins*8) + windowFixedBytes
	st.MaxBytes = int64(a.cfg.MaxSeries) * (seriesFixedBytes + int64(len(a.cfg.Windows))*openPerSize(a.cfg)*st.MaxBytesPerWindow)
	return st
}

// Fixed costs, fitted to BenchmarkMemoryPerSeries (amd64): a series (map
// entry, state) without its key strings, and a window with its sketch but
// without the sketch's bins.
const (
	seriesFixedBytes = 160
	windowFixedBytes = 200
)

// openPerSize: how many windows of one size can be open at once: the
// current one plus those still within the allowed lateness.
func openPerSize(c Config) int64 {
	n := int64(1)
	for _, w := range c.Windows {
		n = max(n, 1+int64((c.AllowedLateness+w-1)/w))
	}
	return n
}
