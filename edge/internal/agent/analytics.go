package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/updraft-io/updraft/edge/internal/aggregate"
	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/edge/internal/ingest"
	"github.com/updraft-io/updraft/edge/internal/rules"
	"github.com/updraft-io/updraft/schemas"
)

// localBuffer is what the analytics need of the durable buffer.
type localBuffer interface {
	ingest.Sink
	Append(kind string, rs []schemas.Reading, done func(error))
	AppendEvent(e buffer.Event, done func(error))
}

var _ localBuffer = (*buffer.Buffer)(nil)

// analytics sits between ingest and the buffer. Rules see each reading at
// once, before it is durable: an alert must not wait for the group commit
// and its fsync (docs/aggregation.md, "Latency"). The aggregator sees a
// reading only once the buffer has made it durable, so a reading that is
// never stored (and will be re-delivered by the broker) is not counted.
type analytics struct {
	edge   schemas.EdgeID
	log    *slog.Logger
	buf    localBuffer
	agg    *aggregate.Aggregator // nil when aggregation is off
	eng    *rules.Engine
	pub    *localPublisher // nil: nothing is published on the local broker
	latest *latestStore
	local  LocalConfig

	qmu  sync.Mutex
	q    []schemas.Reading
	qsig chan struct{}

	mAlerts      *prometheus.CounterVec
	mWindows     prometheus.Counter
	mAggRejected prometheus.Counter
}

var _ ingest.Sink = (*analytics)(nil)

func newAnalytics(cfg Config, buf localBuffer, pub *localPublisher, now func() time.Time,
	log *slog.Logger, reg prometheus.Registerer) (*analytics, error) {
	x := &analytics{edge: cfg.EdgeID(), log: log, buf: buf, pub: pub, latest: newLatestStore(), local: cfg.Local,
		qsig: make(chan struct{}, 1)}
	if cfg.Aggregate.Enabled {
		a, err := aggregate.New(cfg.Aggregate, now)
		if err != nil {
			return nil, err
		}
		x.agg = a
	}
	eng, err := rules.New(cfg.Rules, cfg.windows(), x.edge, now)
	if err != nil {
		return nil, err
	}
	x.eng = eng
	x.mAlerts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "updraft_edge_alerts_total",
		Help: "Alert transitions, by rule and state."}, []string{"rule", "state"})
	x.mWindows = prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_edge_aggregate_windows_total",
		Help: "Aggregate windows closed and emitted."})
	x.mAggRejected = prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_edge_aggregate_append_errors_total",
		Help: "Aggregate batches the buffer refused."})
	if reg != nil {
		reg.MustRegister(x.mAlerts, x.mWindows, x.mAggRejected)
		if x.agg != nil {
			stat := func(f func(aggregate.Stats) float64) func() float64 {
				return func() float64 { return f(x.agg.Stats()) }
			}
			reg.MustRegister(
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "updraft_edge_aggregate_active_series",
					Help: "Series (device, metric) with aggregation state."}, stat(func(s aggregate.Stats) float64 { return float64(s.ActiveSeries) })),
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "updraft_edge_aggregate_open_windows",
					Help: "Windows open (not yet emitted)."}, stat(func(s aggregate.Stats) float64 { return float64(s.OpenWindows) })),
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "updraft_edge_aggregate_bytes",
					Help: "Estimated memory held by aggregation state."}, stat(func(s aggregate.Stats) float64 { return float64(s.ApproxBytes) })),
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "updraft_edge_aggregate_late_readings_total",
					Help: "Readings too late for their window: forwarded raw only."}, stat(func(s aggregate.Stats) float64 { return float64(s.LateReadings) })),
			)
		}
	}
	return x, nil
}

// AppendMessage evaluates the rules, then hands the readings to the buffer;
// once they are durable they go to the aggregator.
func (x *analytics) AppendMessage(kind string, rs []schemas.Reading, m buffer.Message, done func(error)) {
	if as := x.eng.Observe(rs); len(as) > 0 {
		x.alerts(as)
	}
	x.latest.observe(rs)
	if x.agg == nil {
		x.buf.AppendMessage(kind, rs, m, done)
		return
	}
	x.buf.AppendMessage(kind, rs, m, func(err error) {
		if err == nil {
			// The buffer's commit loop calls this: queue, never compute here.
			x.qmu.Lock()
			x.q = append(x.q, rs...)
			x.qmu.Unlock()
			select {
			case x.qsig <- struct{}{}:
			default:
			}
		}
		done(err)
	})
}

// AppendDeadLetter passes dead letters through.
func (x *analytics) AppendDeadLetter(d buffer.DeadLetter, done func(error)) {
	x.buf.AppendDeadLetter(d, done)
}

// Run aggregates durable readings, closes windows of silent series and
// checks absence rules every local.tick, until ctx ends.
func (x *analytics) Run(ctx context.Context) error {
	t := time.NewTicker(x.local.Tick)
	defer t.Stop()
	var batch []schemas.Reading
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-x.qsig:
			x.qmu.Lock()
			batch, x.q = x.q, batch[:0]
			x.qmu.Unlock()
			x.windows(x.agg.Add(batch))
			clear(batch)
		case <-t.C:
			if x.agg != nil {
				x.windows(x.agg.Tick())
			}
			if as := x.eng.Tick(); len(as) > 0 {
				x.alerts(as)
			}
		}
	}
}

// windows sends closed windows to the buffer (kind agg), the local broker,
// the latest store and the window rules.
func (x *analytics) windows(ws []aggregate.Result) {
	if len(ws) == 0 {
		return
	}
	x.mWindows.Add(float64(len(ws)))
	rs := make([]schemas.Reading, 0, len(ws)*len(schemas.Stats))
	for i := range ws {
		rs, _ = ws[i].AppendReadings(rs, x.edge)
	}
	x.buf.Append(schemas.KindAgg, rs, func(err error) {
		if err != nil {
			x.mAggRejected.Inc()
			x.log.Warn("aggregates not buffered", "windows", len(ws), "err", err)
		}
	})
	x.latest.windows(ws)
	if x.pub != nil && x.local.PublishAggregates {
		for i := range ws {
			w := &ws[i]
			topic := x.local.TopicPrefix + "/agg/" + topicLevel(x.edge.Site) + "/" + topicLevel(w.Device) + "/" +
				topicLevel(w.Metric) + "/" + schemas.FormatWindow(w.Window)
			x.pub.publish(topic, 0, false, windowJSONOf(x.edge, w))
		}
	}
	if as := x.eng.ObserveWindows(ws); len(as) > 0 {
		x.alerts(as)
	}
}

// alerts publishes transitions on the local broker (retained, so a new
// subscriber sees each rule's current state) and appends them to the buffer
// as events, which the forwarder sends to events.<region>.<site>.<edge>.alert:
// an alert raised during an uplink outage survives an agent restart.
func (x *analytics) alerts(as []rules.Alert) {
	for i := range as {
		a := &as[i]
		x.mAlerts.WithLabelValues(a.Rule, a.State).Inc()
		x.log.Info("alert", "rule", a.Rule, "state", a.State, "device", a.Device, "metric", a.Metric,
			"value", a.Value, "condition", a.Condition)
		if x.pub != nil {
			x.pub.publish(x.AlertTopic(a.Device, a.Rule), 1, true, a)
		}
		data, err := json.Marshal(a)
		if err != nil {
			x.log.Error("alert event not encoded", "rule", a.Rule, "err", err)
			continue
		}
		x.buf.AppendEvent(buffer.Event{Kind: "alert", At: a.At, Payload: data}, func(err error) {
			if err != nil {
				x.log.Warn("alert event not buffered", "rule", a.Rule, "state", a.State, "err", err)
			}
		})
	}
}

// AlertTopic is where alerts of rule for device are published.
func (x *analytics) AlertTopic(device, rule string) string {
	return x.local.TopicPrefix + "/alerts/" + topicLevel(x.edge.Site) + "/" + topicLevel(device) + "/" + topicLevel(rule)
}

// topicLevel makes a token safe as one MQTT topic level: tokens may hold
// '/', '+' and '#', which MQTT gives meaning to.
func topicLevel(s string) string {
	if !strings.ContainsAny(s, "/+#") {
		return s
	}
	return strings.NewReplacer("/", "_", "+", "_", "#", "_").Replace(s)
}

// reconfigure applies new aggregate and rule settings (validated by the
// caller). Windows of a removed size are emitted, not dropped.
func (x *analytics) reconfigure(cfg Config) error {
	if cfg.Aggregate.Enabled != (x.agg != nil) {
		return fmt.Errorf("aggregate.enabled cannot change on reload: restart the agent to turn aggregation %s",
			map[bool]string{true: "on", false: "off"}[cfg.Aggregate.Enabled])
	}
	if x.agg != nil {
		// Refuse the rules before touching the windows, so a bad reload changes nothing.
		if err := rules.Validate(cfg.Rules, cfg.windows()); err != nil {
			return err
		}
		ws, err := x.agg.Reconfigure(cfg.Aggregate)
		if err != nil {
			return err
		}
		defer x.windows(ws)
	}
	as, err := x.eng.ReconfigureAlerts(cfg.Rules, cfg.windows())
	if err != nil {
		return err
	}
	x.alerts(as)
	return nil
}

// windowJSON is a window as JSON (local broker, /api/v1/latest): statistics
// that are not finite are left out.
type windowJSON struct {
	Region string    `json:"region,omitempty"`
	Site   string    `json:"site,omitempty"`
	Edge   string    `json:"edge,omitempty"`
	Device string    `json:"device,omitempty"`
	Metric string    `json:"metric,omitempty"`
	Unit   string    `json:"unit,omitempty"`
	Window string    `json:"window"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Count  int64     `json:"count"`
	Min    *float64  `json:"min,omitempty"`
	Max    *float64  `json:"max,omitempty"`
	Sum    *float64  `json:"sum,omitempty"`
	Mean   *float64  `json:"mean,omitempty"`
	Last   *float64  `json:"last,omitempty"`
	Stddev *float64  `json:"stddev,omitempty"`
	P50    *float64  `json:"p50,omitempty"`
	P90    *float64  `json:"p90,omitempty"`
	P99    *float64  `json:"p99,omitempty"`
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func windowJSONOf(edge schemas.EdgeID, w *aggregate.Result) windowJSON {
	return windowJSON{Region: edge.Region, Site: edge.Site, Edge: edge.Edge, Device: w.Device, Metric: w.Metric, Unit: w.Unit,
		Window: schemas.FormatWindow(w.Window), Start: time.Unix(0, w.Start).UTC(), End: time.Unix(0, w.End()).UTC(),
		Count: w.Count, Min: finite(w.Min), Max: finite(w.Max), Sum: finite(w.Sum), Mean: finite(w.Mean), Last: finite(w.Last),
		Stddev: finite(w.Stddev), P50: finite(w.P50), P90: finite(w.P90), P99: finite(w.P99)}
}

// latestStore keeps the latest value and latest closed window of each
// (device, metric) for GET /api/v1/latest.
type latestStore struct {
	mu sync.Mutex
	m  map[[2]string]*latestEntry
}

type latestEntry struct {
	Device  string                `json:"device"`
	Metric  string                `json:"metric"`
	Unit    string                `json:"unit,omitempty"`
	Value   float64               `json:"value"`
	TS      time.Time             `json:"ts,omitzero"`
	Windows map[string]windowJSON `json:"windows,omitempty"`
	ts      int64
}

func newLatestStore() *latestStore { return &latestStore{m: map[[2]string]*latestEntry{}} }

func (l *latestStore) entry(device, metric string) *latestEntry {
	k := [2]string{device, metric}
	e := l.m[k]
	if e == nil {
		e = &latestEntry{Device: device, Metric: metric}
		l.m[k] = e
	}
	return e
}

func (l *latestStore) observe(rs []schemas.Reading) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range rs {
		r := &rs[i]
		e := l.entry(r.Device, r.Metric)
		// Latest by event time: a late reading does not replace a newer one.
		if r.TS >= e.ts {
			e.ts, e.Value, e.Unit = r.TS, r.Value, r.Unit
		}
	}
}

func (l *latestStore) windows(ws []aggregate.Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range ws {
		w := &ws[i]
		e := l.entry(w.Device, w.Metric)
		if e.Windows == nil {
			e.Windows = map[string]windowJSON{}
		}
		name := schemas.FormatWindow(w.Window)
		if old, ok := e.Windows[name]; ok && old.Start.UnixNano() > w.Start {
			continue
		}
		j := windowJSONOf(schemas.EdgeID{}, w)
		j.Device, j.Metric = "", ""
		e.Windows[name] = j
	}
}

// Latest is the JSON of GET /api/v1/latest.
type Latest struct {
	Edge   string        `json:"edge"`
	Series []latestEntry `json:"series"`
}

func (l *latestStore) snapshot(device, metric string) []latestEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]latestEntry, 0, len(l.m))
	for _, e := range l.m {
		if (device != "" && e.Device != device) || (metric != "" && e.Metric != metric) {
			continue
		}
		c := *e
		c.Windows = make(map[string]windowJSON, len(e.Windows))
		for k, v := range e.Windows {
			c.Windows[k] = v
		}
		if c.ts > 0 {
			c.TS = time.Unix(0, c.ts).UTC()
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b latestEntry) int {
		return strings.Compare(a.Device+"\x00"+a.Metric, b.Device+"\x00"+b.Metric)
	})
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
