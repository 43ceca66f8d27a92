package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	"github.com/updraft-io/updraft/tools/internal/netproxy"
	"github.com/updraft-io/updraft/tools/internal/sim"
	"github.com/updraft-io/updraft/tools/internal/stack"
)

// telemetryStream is the regional stream's name in deploy/local/gateway.yaml.
const telemetryStream = "TELEMETRY"

// load is a simulator publishing in the background until stopped.
type load struct {
	s      *sim.Sim
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startLoad runs the simulator against the edge's broker: rate 0 is as fast
// as the broker acknowledges; messages 0 is until stopped. opts change the
// simulator's configuration last.
func (e *env) startLoad(ctx context.Context, topic, clientID string, rate float64, messages int64, opts ...func(*sim.Config)) (*load, error) {
	cfg := sim.DefaultConfig()
	cfg.Broker, cfg.Topic, cfg.ClientIDPrefix = e.mqttURL(), topic, clientID
	cfg.Devices, cfg.Rate, cfg.Messages = e.sz.Devices, rate, messages
	cfg.Connections, cfg.Progress, cfg.Period = 4, 0, 10*time.Minute
	for _, o := range opts {
		o(&cfg)
	}
	s, err := sim.New(cfg, nil)
	if err != nil {
		return nil, err
	}
	s.SetProgressOutput(io.Discard, false)
	ctx, cancel := context.WithCancel(ctx)
	l := &load{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { l.done <- s.Run(ctx) }()
	select {
	case <-s.Publishing():
		return l, nil
	case err := <-l.done:
		cancel()
		return nil, fmt.Errorf("simulator: %v", err)
	case <-time.After(30 * time.Second):
		l.stop()
		return nil, fmt.Errorf("simulator not publishing after 30s")
	}
}

// stop ends the simulator and waits for it; a cancelled run is not an
// error. It may be called more than once.
func (l *load) stop() sim.Summary {
	l.cancel()
	l.once.Do(func() { l.err = <-l.done })
	return l.s.Summary()
}

// wait blocks for a run with a message limit to finish.
func (l *load) wait(ctx context.Context) (sim.Summary, error) {
	select {
	case err := <-l.done:
		l.once.Do(func() { l.err = err })
		l.cancel()
		return l.s.Summary(), err
	case <-ctx.Done():
		return l.stop(), ctx.Err()
	}
}

// pause waits d, a measuring window (not a condition).
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// ---- ingest ----------------------------------------------------------------

var ingestScenario = scenario{
	specs: []spec{
		{Name: "mqtt_msgs_per_s", Unit: "msgs/s", Better: Higher, Help: "under an unthrottled load, MQTT messages/s the edge acknowledged after making their readings durable"},
		{Name: "readings_per_s_durable", Unit: "readings/s", Better: Higher, Help: "readings/s written to the durable buffer"},
		{Name: "readings_per_s_jetstream", Unit: "readings/s", Better: Higher, Help: "readings/s acknowledged by the regional JetStream"},
		{Name: "ceiling_unthrottled_msgs_per_s", Unit: "msgs/s", Better: Info, Help: "the same broker and unthrottled load delivering to a QoS 1 subscriber that does nothing"},
		{Name: "ceiling_msgs_per_s", Unit: "msgs/s", Better: Info, Help: "the highest paced rate that subscriber keeps up with (as sustained_msgs_per_s), searched in turns with the agent's"},
		{Name: "sustained_msgs_per_s", Unit: "msgs/s", Better: Higher, Help: "the highest paced rate the agent keeps up with, acknowledging 98% or more of what is sent as it is sent"},
		{Name: "sustained_readings_per_s_jetstream", Unit: "readings/s", Better: Higher, Help: "at the sustained rate, readings/s acknowledged by the regional JetStream"},
		{Name: "ratio_to_ceiling", Unit: "ratio", Better: Higher, Help: "sustained_msgs_per_s / ceiling_msgs_per_s"},
		{Name: "agent_cores", Unit: "cores", Better: Info, Help: "at the sustained rate, the agent's CPU time (user + system) per second"},
		{Name: "alerts_per_msg", Unit: "ratio", Better: Info, Help: "at the sustained rate, alerts raised or resolved by the local stack's rules per message acknowledged"},
		{Name: "overload_alerts_per_msg", Unit: "ratio", Better: Info, Help: "the same under the unthrottled load, where each message advances its device's signals by a second"},
		{Name: "overload_delivered_fraction", Unit: "ratio", Better: Info, Help: "of the messages the unthrottled publisher sent, the fraction the agent received"},
		{Name: "sustained_delivered_fraction", Unit: "ratio", Better: Higher, Help: "of the messages sent at the sustained rate, the fraction the agent received and made durable"},
	},
	params: func(sz sizes) map[string]any {
		return map[string]any{"warmup": sz.Warmup.String(), "window": sz.IngestWindow.String(), "devices": sz.Devices,
			"qos": 1, "rate": "unthrottled, then paced", "edge": "GOMAXPROCS=1, not pinned", "kept_up": keptUp}
	},
	run: runIngest,
}

// quietSignals takes the noise and the anomalies out of the simulator's
// signals. The ingest scenario runs its devices at hundreds of messages a
// second each, and noise of a tenth of a degree between readings a few
// milliseconds apart makes the local stack's temperature-jump rule (2
// degrees a second) fire on about every third message: an alert storm, which
// BenchmarkStoreForwardIngest measures as a case of its own
// (docs/delivery.md, "A paced load").
func quietSignals(c *sim.Config) {
	for i := range c.Metrics {
		c.Metrics[i].Noise = 0
	}
	c.Anomalies = sim.Anomalies{}
}

func runIngest(ctx context.Context, e *env) (sample, error) {
	s := newSample()
	broker, err := e.useMosquitto()
	if err != nil {
		return s, err
	}
	s.notes["broker"] = broker
	if err := e.start(ctx, stack.Gateway, stack.Edge); err != nil {
		return s, err
	}
	s.notes["pinning"] = e.pinned

	// The ceiling's subscriber: updraft-sink, a process of its own on the
	// edge's broker, acknowledging and discarding, on topics the agent does
	// not subscribe to.
	sink, err := e.startSink("bench/+/telemetry")
	if err != nil {
		return s, err
	}
	got := func() (float64, error) {
		n, err := sink.count()
		return float64(n), err
	}
	ceiling := &pacedSide{name: "ceiling", topic: "bench/{device}/telemetry", clientID: "bench-ceil",
		sample: func(context.Context) (pacedSample, error) {
			n, err := got()
			return pacedSample{received: n}, err
		}}

	n, err := got()
	if err != nil {
		return s, err
	}
	ceiling.settle = counterSettled(got, n, e.sz.DrainTimeout)

	// Unthrottled (rate 0), to the subscriber: where the paced searches
	// start.
	unthrottled, err := e.pacedStep(ctx, ceiling)
	if err != nil {
		return s, fmt.Errorf("ceiling, unthrottled: %w", err)
	}
	s.values["ceiling_unthrottled_msgs_per_s"] = unthrottled.acked
	simMax := unthrottled.sent

	// Unthrottled, into the agent.
	start, err := e.edge(ctx)
	if err != nil {
		return s, err
	}
	l, err := e.startLoad(ctx, "devices/{device}/telemetry", "bench-pipe", 0, 0, quietSignals)
	if err != nil {
		return s, err
	}
	defer l.stop()
	if err := pause(ctx, e.sz.Warmup); err != nil {
		return s, err
	}
	a, err := e.edge(ctx)
	if err != nil {
		return s, err
	}
	alerts0, err := e.edgeAlerts(ctx)
	if err != nil {
		return s, err
	}
	if err := pause(ctx, e.sz.IngestWindow); err != nil {
		return s, err
	}
	b, err := e.edge(ctx)
	if err != nil {
		return s, err
	}
	alerts1, err := e.edgeAlerts(ctx)
	if err != nil {
		return s, err
	}
	dt := b.at.Sub(a.at).Seconds()
	s.values["mqtt_msgs_per_s"] = (b.acked - a.acked) / dt
	s.values["overload_alerts_per_msg"] = (alerts1 - alerts0) / max(b.acked-a.acked, 1)
	s.values["readings_per_s_durable"] = (b.accepted - a.accepted) / dt
	s.values["readings_per_s_jetstream"] = (b.forwarded - a.forwarded) / dt
	sum := l.stop()
	end, err := e.edgeSettled(ctx, start.acked+float64(sum.Messages))
	if err != nil {
		return s, err
	}
	// Out of what was sent, not what the broker acknowledged: publishes
	// still in flight when the load stops count as the publisher's errors,
	// though the broker may have taken them and delivered them to the agent.
	s.values["overload_delivered_fraction"] = (end.acked - start.acked) / float64(max(sum.Sent, 1))

	// Paced: the highest rate each side keeps up with, searched in turns.
	pid := e.edgePID()
	prev := end
	agent := &pacedSide{name: "agent", topic: "devices/{device}/telemetry", clientID: "bench-sust",
		sample: func(ctx context.Context) (pacedSample, error) {
			c, err := e.edge(ctx)
			if err != nil {
				return pacedSample{}, err
			}
			alerts, err := e.edgeAlerts(ctx)
			if err != nil {
				return pacedSample{}, err
			}
			cpu, err := stack.ProcCPU(pid)
			return pacedSample{received: c.acked, forwarded: c.forwarded, alerts: alerts, cpu: cpu}, err
		},
		settle: func(ctx context.Context, published float64) (float64, error) {
			c, err := e.edgeSettled(ctx, prev.acked+published)
			delivered := c.acked - prev.acked
			prev = c
			return delivered, err
		}}
	ceiling.start(s.values["ceiling_unthrottled_msgs_per_s"], 1.05*simMax)
	agent.start(min(0.9*s.values["mqtt_msgs_per_s"], s.values["ceiling_unthrottled_msgs_per_s"]), 1.05*simMax)
	if err := e.pacedSearch(ctx, ceiling, agent); err != nil {
		return s, err
	}
	s.values["ceiling_msgs_per_s"] = ceiling.best.acked
	s.values["sustained_msgs_per_s"] = agent.best.acked
	s.values["sustained_readings_per_s_jetstream"] = agent.best.forwarded
	s.values["sustained_delivered_fraction"] = agent.best.delivered
	s.values["alerts_per_msg"] = agent.best.alerts
	s.values["agent_cores"] = agent.best.cores
	s.values["ratio_to_ceiling"] = agent.best.acked / ceiling.best.acked
	s.notes["sustained"] = agent.note()
	s.notes["ceiling"] = ceiling.note()
	return s, nil
}

// keptUp: a side keeps up with a paced rate when, over the measuring
// window, it acknowledges at least this fraction of what the simulator
// sent. Below it the broker's queue for it grows.
const keptUp = 0.98

// pacedSide is one side of the paced comparison, the agent or the ceiling's
// subscriber that does nothing, and the state of the search for the
// highest rate it keeps up with: by bisection between 0 and a bound, from a
// first rate; it ends when the bounds are within 5 % of each other or after
// 7 rates.
type pacedSide struct {
	name, topic, clientID string
	// sample reads what this side has received (and, for the agent, done)
	// so far.
	sample func(ctx context.Context) (pacedSample, error)
	// settle waits after a step until the messages the broker acknowledged
	// to the simulator (published) have arrived, or have stopped arriving,
	// and returns how many arrived since the previous settle.
	settle func(ctx context.Context, published float64) (float64, error)

	lo, hi, rate float64
	steps        int
	done         bool
	repeated     bool // the current rate is being tried a second time
	best         pacedStep
	tried        []string
}

// pacedSample is a side's counters at one moment.
type pacedSample struct {
	received          float64 // messages acknowledged to the broker
	forwarded, alerts float64 // the agent's readings into JetStream, alerts raised and resolved
	cpu               time.Duration
}

// pacedStep is one rate tried, measured over the window.
type pacedStep struct {
	rate, sent, acked float64 // msgs/s asked, sent and acknowledged
	delivered         float64 // of all sent in the step, the fraction received once settled
	forwarded, alerts float64 // readings/s into JetStream; alerts per message
	cores             float64 // the agent's CPU seconds per second
}

func (p *pacedSide) start(rate, bound float64) {
	p.lo, p.hi, p.rate = 0, bound, min(rate, bound)
	p.done = p.rate <= 0
}

// record takes a step's outcome and chooses the next rate. The bounds move
// to the rate the simulator sent, which may fall short of the rate asked:
// what a side kept up with is what it was offered.
func (p *pacedSide) record(st pacedStep) {
	ok := st.acked >= keptUp*st.sent
	t := fmt.Sprintf("%.0f sent %.0f acked %.0f msgs/s (%s)", st.rate, st.sent, st.acked, map[bool]string{true: "kept up", false: "fell behind"}[ok])
	if st.sent < 0.95*st.rate {
		t += ", the simulator short of the rate"
	}
	p.tried = append(p.tried, t)
	// A side that kept up is credited with no more than was sent in the
	// window: acknowledging more means it was still taking messages queued
	// before the window opened.
	st.acked = min(st.acked, st.sent)
	if ok && st.acked > p.best.acked {
		p.best = st
	}
	p.steps++
	short := st.sent < 0.95*st.rate
	switch {
	case !ok && short && !p.repeated:
		// Falling behind while the simulator could not send what was
		// asked says the machine was short of CPU for everyone at that
		// moment, not where this side's limit is: the rate is tried once
		// more before it bounds the search.
		p.repeated = true
		p.tried[len(p.tried)-1] += ", tried again"
		p.done = p.steps >= 7
		return
	case ok:
		p.lo = max(p.lo, st.sent)
	default:
		p.hi = min(p.hi, st.sent)
	}
	p.repeated = false
	p.rate = (p.lo + p.hi) / 2
	p.done = p.steps >= 7 || p.rate <= 0 || p.lo > 0 && p.hi <= 1.05*p.lo
}

func (p *pacedSide) note() string { return strings.Join(p.tried, "; ") }

// pacedSearch runs the sides' searches in turns, a rate of one then a rate
// of the other, so that both see the same machine: its speed drifts by a
// tenth and more within minutes.
func (e *env) pacedSearch(ctx context.Context, sides ...*pacedSide) error {
	for {
		active := false
		for _, p := range sides {
			if p.done {
				continue
			}
			active = true
			st, err := e.pacedStep(ctx, p)
			if err != nil {
				return fmt.Errorf("%s at %.0f msgs/s: %w", p.name, p.rate, err)
			}
			p.record(st)
		}
		if !active {
			break
		}
	}
	for _, p := range sides {
		if p.best.acked == 0 {
			return fmt.Errorf("the %s kept up with none of the paced rates: %s", p.name, p.note())
		}
	}
	return nil
}

// pacedStep publishes at p.rate (0: as fast as the simulator can), measures
// over the window after the warm-up, stops, and waits for p to settle.
func (e *env) pacedStep(ctx context.Context, p *pacedSide) (pacedStep, error) {
	st := pacedStep{rate: p.rate}
	l, err := e.startLoad(ctx, p.topic, fmt.Sprintf("%s%d", p.clientID, p.steps), p.rate, 0, quietSignals)
	if err != nil {
		return st, err
	}
	defer l.stop()
	if err := pause(ctx, e.sz.Warmup); err != nil {
		return st, err
	}
	sent0 := l.s.Summary().Sent
	a, err := p.sample(ctx)
	if err != nil {
		return st, err
	}
	t0 := time.Now()
	if err := pause(ctx, e.sz.IngestWindow); err != nil {
		return st, err
	}
	sent1 := l.s.Summary().Sent
	b, err := p.sample(ctx)
	if err != nil {
		return st, err
	}
	dt := time.Since(t0).Seconds()
	sum := l.stop()
	delivered, err := p.settle(ctx, float64(sum.Messages))
	if err != nil {
		return st, err
	}
	n := b.received - a.received
	st.sent, st.acked = float64(sent1-sent0)/dt, n/dt
	st.delivered = delivered / float64(max(sum.Sent, 1))
	st.forwarded = (b.forwarded - a.forwarded) / dt
	st.alerts = (b.alerts - a.alerts) / max(n, 1)
	st.cores = (b.cpu - a.cpu).Seconds() / dt
	return st, nil
}

// counterSettled is the settle of a subscriber whose count is got, from
// last, giving up after d.
func counterSettled(got func() (float64, error), last float64, d time.Duration) func(ctx context.Context, published float64) (float64, error) {
	return func(ctx context.Context, published float64) (float64, error) {
		n, err := got()
		if err != nil {
			return 0, err
		}
		stable := 0
		err = poll(ctx, d, settlePoll, "the ceiling's subscriber to settle", func() (bool, error) {
			m, err := got()
			if err != nil {
				return false, err
			}
			if m == n {
				stable++
			} else {
				stable = 0
			}
			n = m
			quiet := time.Duration(stable) * settlePoll
			return n-last >= published && quiet >= settlePoll || quiet >= settleGiveUp, nil
		})
		delivered := n - last
		last = n
		return delivered, err
	}
}

// edgeSettled waits until the agent has acknowledged want messages in all
// (what the broker acknowledged to the simulator), forwarded all it
// buffered, and its count has then not moved for settleQuiet, so that the
// next phase starts with the agent idle; or until the count has not moved
// for settleGiveUp (a broker that drops messages beyond a quota, as the
// embedded one does under an unthrottled load, never delivers them all),
// and returns the counters.
func (e *env) edgeSettled(ctx context.Context, want float64) (edgeCounters, error) {
	var last edgeCounters
	stable := 0
	err := poll(ctx, e.sz.DrainTimeout, settlePoll, "the edge to settle", func() (bool, error) {
		c, err := e.edge(ctx)
		if err != nil {
			return false, err
		}
		if c.acked == last.acked {
			stable++
		} else {
			stable = 0
		}
		last = c
		quiet := time.Duration(stable) * settlePoll
		return c.acked >= want && c.buffered == 0 && quiet >= settleQuiet || quiet >= settleGiveUp, nil
	})
	return last, err
}

// settleQuiet: after the unthrottled load, the embedded broker may hold
// thousands of messages for an agent whose garbage collector runs almost
// continuously (docs/performance.md). With a quiet of 600 ms the paced
// load once counted more deliveries than it sent
// (sustained_delivered_fraction 1.0016), which messages of the unthrottled
// load arriving late would explain. Behind Mosquitto, an agent draining
// an alert storm once stopped acknowledging for over 2 s with messages
// still queued: hence the count to wait for, and the longer settleGiveUp.
const (
	settleQuiet  = 2 * time.Second
	settleGiveUp = 10 * time.Second
	settlePoll   = 200 * time.Millisecond
)

// ---- wire ------------------------------------------------------------------

// wireFormat is one payload format measured on the uplink: it names the
// format and publishes n messages of it to the edge's broker, returning the
// readings the broker acknowledged.
type wireFormat struct {
	Name    string
	Publish func(ctx context.Context, e *env, n int64) (readings int64, err error)
}

// wireRate paces the wire scenario's publishing below the edge's ingest
// ceiling, so every message reaches the agent: it measures bytes, not speed.
const wireRate = 1000

// wireFormats are the payload formats the edge decodes; a new decoder adds
// an entry here (and a subscription for its topic to the edge config).
var wireFormats = []wireFormat{
	{Name: "json", Publish: func(ctx context.Context, e *env, n int64) (int64, error) {
		l, err := e.startLoad(ctx, "devices/{device}/telemetry", "bench-wire", wireRate, n)
		if err != nil {
			return 0, err
		}
		sum, err := l.wait(ctx)
		if err == nil && sum.Messages < n {
			err = fmt.Errorf("broker acknowledged %d of %d messages", sum.Messages, n)
		}
		return sum.Readings, err
	}},
}

var wireScenario = scenario{
	specs: func() []spec {
		var sp []spec
		for _, f := range wireFormats {
			sp = append(sp,
				spec{Name: f.Name + "_bytes_per_reading", Unit: "bytes", Better: Lower, Help: "NATS data + headers per reading on the edge-to-region link, batched"},
				spec{Name: f.Name + "_baseline_bytes_per_reading", Unit: "bytes", Better: Info, Help: "the same readings sent as one JSON message each (data, no headers)"},
				spec{Name: f.Name + "_ratio_to_baseline", Unit: "ratio", Better: Lower, Help: "batched / JSON-each"},
				spec{Name: f.Name + "_readings", Unit: "readings", Better: Info, Help: "readings measured"},
			)
		}
		return sp
	}(),
	params: func(sz sizes) map[string]any {
		return map[string]any{"messages": sz.WireMessages, "rate_msgs_per_s": wireRate, "devices": sz.Devices, "metrics_per_message": sz.ReadingsPerMsg}
	},
	run: runWire,
	pin: true,
}

// jsonReading is a reading as a self-describing JSON message.
type jsonReading struct {
	TS     int64   `json:"ts"`
	Region string  `json:"region"`
	Site   string  `json:"site"`
	Edge   string  `json:"edge"`
	Device string  `json:"device"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit,omitempty"`
}

func runWire(ctx context.Context, e *env) (sample, error) {
	s := newSample()
	if err := e.start(ctx, stack.Gateway, stack.Edge); err != nil {
		return s, err
	}
	nc, err := nats.Connect(e.natsURL(), nats.Name("updraft-bench-wire"))
	if err != nil {
		return s, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return s, err
	}
	for _, f := range wireFormats {
		st, err := js.Stream(ctx, telemetryStream)
		if err != nil {
			return s, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return s, err
		}
		from := info.State.LastSeq + 1
		before, err := e.edge(ctx)
		if err != nil {
			return s, err
		}
		want, err := f.Publish(ctx, e, e.sz.WireMessages)
		if err != nil {
			return s, fmt.Errorf("publish %s: %w", f.Name, err)
		}
		var after edgeCounters
		err = poll(ctx, e.sz.DrainTimeout, 100*time.Millisecond, "the edge to forward every reading", func() (bool, error) {
			after, err = e.edge(ctx)
			return err == nil && after.forwarded-before.forwarded >= float64(want), err
		})
		if err != nil {
			return s, err
		}
		info, err = st.Info(ctx)
		if err != nil {
			return s, err
		}
		batched, each, readings, err := measureStream(ctx, js, from, info.State.LastSeq)
		if err != nil {
			return s, err
		}
		if readings == 0 {
			return s, fmt.Errorf("%s: no readings in the stream", f.Name)
		}
		s.values[f.Name+"_bytes_per_reading"] = float64(batched) / float64(readings)
		s.values[f.Name+"_baseline_bytes_per_reading"] = float64(each) / float64(readings)
		s.values[f.Name+"_ratio_to_baseline"] = float64(batched) / float64(each)
		s.values[f.Name+"_readings"] = float64(readings)
	}
	return s, nil
}

// measureStream reads stream messages [from, to] and sums their data and
// header bytes, and the bytes of their readings as one JSON message each.
func measureStream(ctx context.Context, js jetstream.JetStream, from, to uint64) (batched, each, readings int64, err error) {
	if to < from {
		return 0, 0, 0, fmt.Errorf("no batches in the stream")
	}
	c, err := js.OrderedConsumer(ctx, telemetryStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return 0, 0, 0, err
	}
	it, err := c.Messages()
	if err != nil {
		return 0, 0, 0, err
	}
	defer it.Stop()
	for seq := from; seq <= to; {
		m, err := nextMsg(ctx, it)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("read stream at sequence %d of %d: %w", seq, to, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return 0, 0, 0, err
		}
		seq = md.Sequence.Stream + 1
		batched += int64(len(m.Data()) + headerBytes(m.Headers()))
		b, err := batch.Decode(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			return 0, 0, 0, err
		}
		for _, r := range b.Readings {
			j, _ := json.Marshal(jsonReading{r.TS, r.Region, r.Site, r.Edge, r.Device, r.Metric, r.Value, r.Unit})
			each += int64(len(j))
			readings++
		}
	}
	return batched, each, readings, nil
}

// nextMsg returns the next message, giving up after 10 s of silence.
func nextMsg(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	type res struct {
		m   jetstream.Msg
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := it.Next(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(10 * time.Second):
		it.Stop()
		return nil, fmt.Errorf("no message for 10s")
	case <-ctx.Done():
		it.Stop()
		return nil, ctx.Err()
	}
}

// headerBytes is the size of NATS headers on the wire.
func headerBytes(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n") + 2
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// ---- latency ---------------------------------------------------------------

var latencyScenario = scenario{
	specs: []spec{
		{Name: "stream_p50_ms", Unit: "ms", Better: Lower, Help: "device publish to the batch arriving in the regional stream"},
		{Name: "stream_p90_ms", Unit: "ms", Better: Lower},
		{Name: "stream_p99_ms", Unit: "ms", Better: Lower},
		{Name: "stream_max_ms", Unit: "ms", Better: Lower},
		{Name: "lake_p50_ms", Unit: "ms", Better: Lower, Help: "device publish to the reading answering a lake query (polled every 50 ms)"},
		{Name: "lake_p90_ms", Unit: "ms", Better: Lower},
		{Name: "lake_p99_ms", Unit: "ms", Better: Lower},
		{Name: "lake_max_ms", Unit: "ms", Better: Lower},
		{Name: "alert_p50_ms", Unit: "ms", Better: Lower, Help: "device publish to the alert it causes arriving at a subscriber on the edge's broker"},
		{Name: "alert_p90_ms", Unit: "ms", Better: Lower},
		{Name: "alert_p99_ms", Unit: "ms", Better: Lower},
		{Name: "alert_max_ms", Unit: "ms", Better: Lower},
		{Name: "probes", Unit: "readings", Better: Info},
		{Name: "load_msgs_per_s", Unit: "msgs/s", Better: Info, Help: "background load while probing"},
	},
	params: func(sz sizes) map[string]any {
		return map[string]any{"load_msgs_per_s": sz.LoadRate, "probes": sz.LatencyProbes, "probe_interval": sz.ProbeInterval.String(),
			"devices": sz.Devices, "cloud_roll_interval": "500ms", "edge_batch_max_age": "from deploy/local/edge.yaml",
			"alert_rule": probeAlertRule + ": threshold on " + probeDevice + " " + probeAlertMetric + " above 0, hysteresis 0, added to the rules of deploy/local/edge.yaml"}
	},
	run: runLatency,
	pin: true,
}

func runLatency(ctx context.Context, e *env) (sample, error) {
	s := newSample()
	prefix, err := e.writeAlertConfig()
	if err != nil {
		return s, err
	}
	if err := e.start(ctx, stack.Gateway, stack.Cloud, stack.Edge); err != nil {
		return s, err
	}
	p, err := newProbes(e)
	if err != nil {
		return s, err
	}
	defer p.close()
	if err := p.watchAlerts(e, prefix); err != nil {
		return s, err
	}
	s.notes["local_alert_latency"] = fmt.Sprintf("each probe flips rule %s (firing on odd probes, resolved on even); timed to the alert on %s/alerts/#", probeAlertRule, prefix)
	l, err := e.startLoad(ctx, "devices/{device}/telemetry", "bench-load", e.sz.LoadRate, 0)
	if err != nil {
		return s, err
	}
	defer l.stop()
	if err := pause(ctx, e.sz.Warmup); err != nil {
		return s, err
	}
	start := time.Now()
	pollCtx, stopPoll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var pollErr error
	wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-pollCtx.Done():
				return
			case <-t.C:
				if err := p.pollLake(pollCtx, e.s.URL(stack.Cloud), start); err != nil && pollCtx.Err() == nil {
					pollErr = err
				}
			}
		}
	})
	defer func() { stopPoll(); wg.Wait() }()
	tick := time.NewTicker(e.sz.ProbeInterval)
	for range e.sz.LatencyProbes {
		if _, err := p.publish(); err != nil {
			tick.Stop()
			return s, err
		}
		<-tick.C
	}
	tick.Stop()
	last := e.sz.LatencyProbes
	if err := poll(ctx, e.sz.DrainTimeout, 50*time.Millisecond, "every probe in the stream, the lake and an alert", func() (bool, error) {
		a, err := p.arrived(1, last, inStream)
		b, _ := p.arrived(1, last, inLake)
		c, _ := p.arrived(1, last, asAlert)
		return a && b && c, err
	}); err != nil {
		return s, err
	}
	stopPoll()
	wg.Wait()
	if pollErr != nil {
		return s, fmt.Errorf("lake query: %w", pollErr)
	}
	sum := l.stop()
	s.values["stream_p50_ms"], s.values["stream_p90_ms"], s.values["stream_p99_ms"], s.values["stream_max_ms"] = percentiles(p.latencies(1, last, inStream))
	s.values["lake_p50_ms"], s.values["lake_p90_ms"], s.values["lake_p99_ms"], s.values["lake_max_ms"] = percentiles(p.latencies(1, last, inLake))
	s.values["alert_p50_ms"], s.values["alert_p90_ms"], s.values["alert_p99_ms"], s.values["alert_max_ms"] = percentiles(p.latencies(1, last, asAlert))
	s.values["probes"] = float64(last)
	if !sum.Started.IsZero() {
		s.values["load_msgs_per_s"] = float64(sum.Messages) / time.Since(sum.Started).Seconds()
	}
	return s, nil
}

// defaultTopicPrefix is the agent's local.topic_prefix default, used when
// the base configuration turns local publishing off.
const defaultTopicPrefix = "updraft"

// writeAlertConfig writes the edge configuration for the latency run: the
// base edge.yaml with the probe rule added to its rules (and local publishing
// on), and makes the edge read it. The agent reads one --config, the last
// given, so the file is complete. It returns the alerts' topic prefix.
func (e *env) writeAlertConfig() (string, error) {
	base := filepath.Join(e.opts.ConfigDir, "edge.yaml")
	b, err := os.ReadFile(base)
	if err != nil {
		return "", fmt.Errorf("read the base edge configuration: %w", err)
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return "", fmt.Errorf("parse %s: %w", base, err)
	}
	rules, _ := cfg["rules"].([]any)
	cfg["rules"] = append(rules, map[string]any{"name": probeAlertRule, "kind": "threshold", "device": probeDevice,
		"metric": probeAlertMetric, "above": 0, "hysteresis": 0, "severity": "info"})
	local, _ := cfg["local"].(map[string]any)
	if local == nil {
		local = map[string]any{}
	}
	prefix, _ := local["topic_prefix"].(string)
	if prefix == "" {
		prefix = defaultTopicPrefix
		local["topic_prefix"] = prefix
	}
	cfg["local"] = local
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(e.root, "edge-latency.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return "", fmt.Errorf("write the latency edge configuration: %w", err)
	}
	e.args[stack.Edge] = append(e.args[stack.Edge], "--config", path)
	return prefix, nil
}

// ---- outage ----------------------------------------------------------------

var outageScenario = scenario{
	specs: []spec{
		{Name: "backlog_peak_readings", Unit: "readings", Better: Info, Help: "most readings buffered at the edge during the outage and drain"},
		{Name: "drain_s", Unit: "s", Better: Lower, Help: "from restoring the uplink until the backlog is back to its pre-outage level"},
		{Name: "drain_readings_per_s", Unit: "readings/s", Better: Higher, Help: "readings/s acknowledged by JetStream during the drain (backlog and live)"},
		{Name: "live_p50_ms", Unit: "ms", Better: Lower, Help: "publish-to-stream latency of live readings published during the drain"},
		{Name: "live_p99_ms", Unit: "ms", Better: Lower},
		{Name: "live_max_ms", Unit: "ms", Better: Lower},
		{Name: "outage_s", Unit: "s", Better: Info},
	},
	params: func(sz sizes) map[string]any {
		return map[string]any{"load_msgs_per_s": sz.LoadRate, "outage": sz.OutageCut.String(), "devices": sz.Devices,
			"probe_interval": sz.ProbeInterval.String(), "uplink": "netproxy between edge and gateway"}
	},
	run: runOutage,
	pin: true,
}

func runOutage(ctx context.Context, e *env) (sample, error) {
	s := newSample()
	proxy, err := netproxy.New("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", e.ports.NATS))
	if err != nil {
		return s, err
	}
	defer proxy.Close()
	e.args[stack.Edge] = append(e.args[stack.Edge], "--nats-url", "nats://"+proxy.Addr())
	if err := e.start(ctx, stack.Gateway, stack.Edge); err != nil {
		return s, err
	}
	p, err := newProbes(e)
	if err != nil {
		return s, err
	}
	defer p.close()
	l, err := e.startLoad(ctx, "devices/{device}/telemetry", "bench-load", e.sz.LoadRate, 0)
	if err != nil {
		return s, err
	}
	defer l.stop()

	probeCtx, stopProbes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var probeErr error
	wg.Go(func() {
		t := time.NewTicker(e.sz.ProbeInterval)
		defer t.Stop()
		for {
			select {
			case <-probeCtx.Done():
				return
			case <-t.C:
				if _, err := p.publish(); err != nil && probeCtx.Err() == nil {
					probeErr = err
					return
				}
			}
		}
	})
	defer func() { stopProbes(); wg.Wait() }()

	// sampleUntil samples the edge every 100 ms for up to d, tracking the
	// most readings buffered, and returns early once stop holds.
	peak := 0.0
	var cur edgeCounters
	sampleUntil := func(d time.Duration, stop func(edgeCounters) bool) (bool, error) {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			var err error
			if cur, err = e.edge(ctx); err != nil {
				return false, err
			}
			peak = max(peak, cur.buffered)
			if stop != nil && stop(cur) {
				return true, nil
			}
			if err := pause(ctx, 100*time.Millisecond); err != nil {
				return false, err
			}
		}
		return false, nil
	}
	if _, err := sampleUntil(e.sz.Warmup*2, nil); err != nil {
		return s, err
	}
	baseline := peak
	cutAt := time.Now()
	proxy.Cut()
	if _, err := sampleUntil(e.sz.OutageCut, nil); err != nil {
		return s, err
	}
	proxy.Restore()
	restored := time.Now()
	sentBefore := cur.forwarded
	drained, err := sampleUntil(e.sz.DrainTimeout, func(c edgeCounters) bool {
		return c.buffered <= baseline && time.Since(restored) > 200*time.Millisecond
	})
	if err != nil {
		return s, err
	}
	if !drained {
		return s, fmt.Errorf("backlog not drained %s after the uplink came back (buffered %.0f, before the outage %.0f)", e.sz.DrainTimeout, cur.buffered, baseline)
	}
	drainEnd := cur.at
	drain := drainEnd.Sub(restored).Seconds()
	// Live readings: probes published while the backlog drained; at least
	// the first second after the restore, so a fast drain still has some.
	first, last := p.sentBetween(restored, restored.Add(max(drainEnd.Sub(restored), time.Second)))
	if first < 0 {
		return s, fmt.Errorf("no probe published during the drain")
	}
	if err := poll(ctx, e.sz.DrainTimeout, 50*time.Millisecond, "live probes in the stream", func() (bool, error) {
		return p.arrived(first, last, inStream)
	}); err != nil {
		return s, err
	}
	stopProbes()
	wg.Wait()
	if probeErr != nil {
		return s, probeErr
	}
	s.values["backlog_peak_readings"] = peak
	s.values["drain_s"] = drain
	s.values["drain_readings_per_s"] = (cur.forwarded - sentBefore) / drain
	lat := p.latencies(first, last, inStream)
	s.values["live_p50_ms"], _, s.values["live_p99_ms"], s.values["live_max_ms"] = percentiles(lat)
	s.values["outage_s"] = restored.Sub(cutAt).Seconds()
	s.notes["live_probes"] = fmt.Sprintf("%d probes published during the drain", len(lat))
	return s, nil
}

// ---- footprint -------------------------------------------------------------

var footprintScenario = scenario{
	specs: []spec{
		{Name: "rss_mib", Unit: "MiB", Better: Lower, Help: "edge agent resident memory at the end (VmRSS)"},
		{Name: "rss_peak_mib", Unit: "MiB", Better: Lower, Help: "edge agent peak resident memory (VmHWM)"},
		{Name: "cpu_percent_per_1k_msgs", Unit: "% of a core", Better: Lower, Help: "CPU (user+system) per 1,000 messages/s"},
		{Name: "disk_bytes_per_reading", Unit: "bytes", Better: Lower, ZeroOK: true, Help: "bytes the agent sent to storage (/proc io write_bytes) per reading"},
		{Name: "buffer_bytes_per_reading", Unit: "bytes", Better: Lower, Help: "bytes the buffer wrote (its own count) per reading"},
		{Name: "arm64_binary_mib", Unit: "MiB", Better: Lower, Help: "updraft-edge for linux/arm64, -trimpath -ldflags '-s -w'"},
		{Name: "load_msgs_per_s", Unit: "msgs/s", Better: Info},
	},
	params: func(sz sizes) map[string]any {
		return map[string]any{"load_msgs_per_s": sz.LoadRate, "window": sz.FootprintSpan.String(), "devices": sz.Devices,
			"edge": "GOMAXPROCS=1, pinned to CPU 0"}
	},
	run: runFootprint,
	pin: true,
}

func runFootprint(ctx context.Context, e *env) (sample, error) {
	s := newSample()
	size, err := arm64EdgeSize(ctx, e)
	if err != nil {
		return s, err
	}
	s.values["arm64_binary_mib"] = float64(size) / (1 << 20)
	if err := e.start(ctx, stack.Gateway, stack.Edge); err != nil {
		return s, err
	}
	s.notes["pinning"] = e.pinned
	l, err := e.startLoad(ctx, "devices/{device}/telemetry", "bench-load", e.sz.LoadRate, 0)
	if err != nil {
		return s, err
	}
	defer l.stop()
	if err := pause(ctx, e.sz.Warmup); err != nil {
		return s, err
	}
	pid := e.edgePID()
	p0, err := readProc(pid)
	if err != nil {
		return s, err
	}
	a, err := e.edge(ctx)
	if err != nil {
		return s, err
	}
	if err := pause(ctx, e.sz.FootprintSpan); err != nil {
		return s, err
	}
	p1, err := readProc(pid)
	if err != nil {
		return s, err
	}
	b, err := e.edge(ctx)
	if err != nil {
		return s, err
	}
	dt := p1.at.Sub(p0.at).Seconds()
	msgs := (b.acked - a.acked) / b.at.Sub(a.at).Seconds()
	readings := b.accepted - a.accepted
	if msgs <= 0 || readings <= 0 {
		return s, fmt.Errorf("no messages reached the edge in %s", e.sz.FootprintSpan)
	}
	s.values["rss_mib"] = p1.rssKB / 1024
	s.values["rss_peak_mib"] = p1.hwmKB / 1024
	s.values["cpu_percent_per_1k_msgs"] = 100 * (p1.cpuSeconds - p0.cpuSeconds) / dt / (msgs / 1000)
	s.values["disk_bytes_per_reading"] = (p1.writeBytes - p0.writeBytes) / readings
	s.values["buffer_bytes_per_reading"] = (b.written - a.written) / readings
	s.values["load_msgs_per_s"] = msgs
	return s, nil
}

// arm64EdgeSize cross-compiles the edge agent for linux/arm64 as
// `go tool task build:pi` does and returns its size.
func arm64EdgeSize(ctx context.Context, e *env) (int64, error) {
	if e.opts.RepoRoot == "" {
		return 0, fmt.Errorf("repository root unknown: cannot cross-compile the edge for linux/arm64")
	}
	out := filepath.Join(e.root, "arm64", "updraft-edge")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./edge/cmd/updraft-edge")
	cmd.Dir = e.opts.RepoRoot
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("cross-compile updraft-edge for linux/arm64: %v\n%s", err, b)
	}
	st, err := os.Stat(out)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// ---- cloud -----------------------------------------------------------------

var cloudScenario = scenario{
	specs: []spec{
		{Name: "lake_readings_per_s", Unit: "readings/s", Better: Higher, Help: "JetStream to committed Parquet, from the writer's start to the last commit"},
		{Name: "ceiling_readings_per_s", Unit: "readings/s", Better: Info, Help: "reading and decoding the same batches from JetStream, writing nothing"},
		{Name: "ratio_to_ceiling", Unit: "ratio", Better: Higher, Help: "lake_readings_per_s / ceiling_readings_per_s"},
		{Name: "query_p50_ms", Unit: "ms", Better: Lower, Help: "one device, one metric, one minute, over the whole lake"},
		{Name: "query_p99_ms", Unit: "ms", Better: Lower},
		{Name: "query_points", Unit: "points", Better: Info, Help: "points each narrow query returned"},
		{Name: "lake_readings", Unit: "readings", Better: Info},
		{Name: "lake_files", Unit: "files", Better: Info},
	},
	params: func(sz sizes) map[string]any {
		return map[string]any{"readings": sz.CloudReadings, "devices": cloudDevices, "metrics": len(cloudMetrics),
			"batch_readings": cloudBatch, "reading_interval": "1s", "queries": sz.CloudQueries, "roll_interval": "500ms"}
	},
	run: runCloud,
	pin: true,
}

const (
	cloudDevices = 100
	cloudBatch   = 5000
)

var cloudMetrics = []string{"temperature", "humidity", "pressure"}

func runCloud(ctx context.Context, e *env) (sample, error) {
	s := newSample()
	if err := e.start(ctx, stack.Gateway); err != nil {
		return s, err
	}
	nc, err := nats.Connect(e.natsURL(), nats.Name("updraft-bench-cloud"))
	if err != nil {
		return s, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return s, err
	}
	// Readings one second apart per device and metric, ending a minute ago,
	// so the lake spans as many hour partitions as the size implies.
	edge := schemas.EdgeID{Region: "local", Site: "bench", Edge: "edge-bench"}
	perStep := cloudDevices * len(cloudMetrics)
	steps := (e.sz.CloudReadings + perStep - 1) / perStep
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second).Add(-time.Duration(steps) * time.Second)
	id := batch.ID{Edge: edge, Epoch: rand.Uint64()}
	rs := make([]schemas.Reading, 0, cloudBatch)
	total := 0
	flush := func() error {
		if len(rs) == 0 {
			return nil
		}
		id.Seq++
		m, err := batch.Encode(id, schemas.KindRaw, false, rs)
		if err != nil {
			return err
		}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}); err != nil {
			return fmt.Errorf("publish batch %d: %w", id.Seq, err)
		}
		total += len(rs)
		rs = rs[:0]
		return nil
	}
	for st := range steps {
		ts := t0.Add(time.Duration(st) * time.Second).UnixNano()
		for d := range cloudDevices {
			for mi, m := range cloudMetrics {
				rs = append(rs, schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge, Device: sim.DeviceID(d),
					Metric: m, TS: ts, Value: float64(20 + (st+d+mi)%17), Unit: "u"})
				if len(rs) == cloudBatch {
					if err := flush(); err != nil {
						return s, err
					}
				}
			}
		}
	}
	if err := flush(); err != nil {
		return s, err
	}

	// Ceiling: an ordered consumer that reads and decodes every batch and
	// does nothing with the readings: the least work any writer must do.
	c, err := js.OrderedConsumer(ctx, telemetryStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return s, err
	}
	it, err := c.Messages()
	if err != nil {
		return s, err
	}
	start := time.Now()
	for n := uint64(0); n < id.Seq; n++ {
		m, err := nextMsg(ctx, it)
		if err != nil {
			it.Stop()
			return s, fmt.Errorf("ceiling: read batch %d of %d: %w", n+1, id.Seq, err)
		}
		if _, err := batch.Decode(m.Subject(), m.Headers(), m.Data()); err != nil {
			it.Stop()
			return s, fmt.Errorf("ceiling: %w", err)
		}
	}
	it.Stop()
	s.values["ceiling_readings_per_s"] = float64(total) / time.Since(start).Seconds()

	// The lake writer from a cold start to the last commit.
	start = time.Now()
	if err := e.start(ctx, stack.Cloud); err != nil {
		return s, err
	}
	var st map[string]any
	if err := poll(ctx, e.sz.DrainTimeout*2, 50*time.Millisecond, "every reading committed to the lake", func() (bool, error) {
		var err error
		st, err = e.status(ctx, stack.Cloud)
		return err == nil && field(st, "rows_committed") >= float64(total), err
	}); err != nil {
		return s, err
	}
	s.values["lake_readings_per_s"] = float64(total) / time.Since(start).Seconds()
	s.values["ratio_to_ceiling"] = s.values["lake_readings_per_s"] / s.values["ceiling_readings_per_s"]
	s.values["lake_readings"] = field(st, "rows_committed")
	s.values["lake_files"] = field(st, "files")

	// Narrow queries: one device and metric over one minute in the middle.
	mid := t0.Add(time.Duration(steps/2) * time.Second)
	q := url.Values{"device": {sim.DeviceID(41)}, "metric": {"temperature"},
		"from": {mid.Format(time.RFC3339Nano)}, "to": {mid.Add(time.Minute).Format(time.RFC3339Nano)}}
	var ms []float64
	var points int
	for range e.sz.CloudQueries {
		var res struct {
			Points []json.RawMessage `json:"points"`
		}
		t := time.Now()
		if err := stack.GetJSON(ctx, e.s.URL(stack.Cloud)+"/api/v1/query?"+q.Encode(), &res); err != nil {
			return s, err
		}
		ms = append(ms, float64(time.Since(t).Microseconds())/1000)
		points = len(res.Points)
	}
	if points == 0 {
		return s, fmt.Errorf("narrow query %s returned no points", q.Encode())
	}
	s.values["query_p50_ms"], _, s.values["query_p99_ms"], _ = percentiles(ms)
	s.values["query_points"] = float64(points)
	return s, nil
}
