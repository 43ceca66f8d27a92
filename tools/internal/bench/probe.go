package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"

	"github.com/updraft-io/updraft/schemas/batch"
	"github.com/updraft-io/updraft/tools/internal/stack"
)

// Probe readings come from one device with one metric whose value is the
// probe's sequence number, so each can be found downstream and timed.
const (
	probeDevice = "probe-1"
	probeMetric = "probe"
	probeTopic  = "devices/" + probeDevice + "/telemetry"
)

// With alerts watched, each probe also carries probeAlertMetric: +n for an
// odd probe n, -n for an even one. probeAlertRule (threshold above 0,
// hysteresis 0) therefore fires on every odd probe and resolves on every
// even one: one alert per probe, whose value names the probe.
const (
	probeAlertMetric = "probe_alert"
	probeAlertRule   = "bench-probe"
)

// place is where a probe is seen downstream.
type place int

const (
	inStream place = iota // the regional stream
	inLake                // a lake query
	asAlert               // an alert on the edge's broker
)

// probes publishes numbered readings to the edge's broker and records when
// each was published, seen in the regional stream, visible to a lake query,
// and (when watched) raised as an alert.
type probes struct {
	mq     mqtt.Client
	nc     *nats.Conn
	alerts mqtt.Client // nil unless watchAlerts was called

	mu   sync.Mutex
	next int
	sent map[int]time.Time
	seen map[place]map[int]time.Time
	err  error
}

func newProbes(e *env) (*probes, error) {
	p := &probes{sent: map[int]time.Time{},
		seen: map[place]map[int]time.Time{inStream: {}, inLake: {}, asAlert: {}}}
	o := mqtt.NewClientOptions().AddBroker(e.mqttURL()).SetClientID("updraft-bench-probe").
		SetConnectTimeout(10 * time.Second).SetAutoReconnect(true)
	p.mq = mqtt.NewClient(o)
	if t := p.mq.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("probe: connect to %s: %v", e.mqttURL(), t.Error())
	}
	nc, err := nats.Connect(e.natsURL(), nats.Name("updraft-bench-probe"))
	if err != nil {
		p.mq.Disconnect(0)
		return nil, fmt.Errorf("probe: connect to %s: %w", e.natsURL(), err)
	}
	p.nc = nc
	// A core subscription sees every batch the gateway accepts into the
	// stream, as it is stored.
	if _, err := nc.Subscribe("telemetry.>", p.onBatch); err != nil {
		p.close()
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *probes) onBatch(m *nats.Msg) {
	now := time.Now()
	b, err := batch.Decode(m.Subject, m.Header, m.Data)
	if err != nil {
		p.mu.Lock()
		p.err = fmt.Errorf("probe: undecodable batch on %s: %w", m.Subject, err)
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range b.Readings {
		if r.Device == probeDevice && r.Metric == probeMetric {
			if _, ok := p.seen[inStream][int(r.Value)]; !ok {
				p.seen[inStream][int(r.Value)] = now
			}
		}
	}
}

// watchAlerts subscribes to every alert on the edge's broker
// (<prefix>/alerts/#) and makes later probes carry probeAlertMetric. Call it
// before the first probe.
func (p *probes) watchAlerts(e *env, prefix string) error {
	o := mqtt.NewClientOptions().AddBroker(e.mqttURL()).SetClientID("updraft-bench-alerts").
		SetCleanSession(true).SetConnectTimeout(10 * time.Second).SetAutoReconnect(true)
	c := mqtt.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("alert subscriber: connect to %s: %v", e.mqttURL(), t.Error())
	}
	if t := c.Subscribe(prefix+"/alerts/#", 1, p.onAlert); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		c.Disconnect(0)
		return fmt.Errorf("alert subscriber: subscribe %s/alerts/#: %v", prefix, t.Error())
	}
	p.mu.Lock()
	p.alerts = c
	p.mu.Unlock()
	return nil
}

// onAlert records the first alert of the probe rule for each probe; alerts
// of other rules and devices (the simulator's) are ignored.
func (p *probes) onAlert(_ mqtt.Client, m mqtt.Message) {
	now := time.Now()
	var a struct {
		Rule   string  `json:"rule"`
		State  string  `json:"state"`
		Device string  `json:"device"`
		Value  float64 `json:"value"`
	}
	if err := json.Unmarshal(m.Payload(), &a); err != nil {
		p.mu.Lock()
		p.err = fmt.Errorf("probe: undecodable alert on %s: %w", m.Topic(), err)
		p.mu.Unlock()
		return
	}
	if a.Rule != probeAlertRule || a.Device != probeDevice {
		return
	}
	n := int(math.Abs(a.Value))
	p.mu.Lock()
	defer p.mu.Unlock()
	if want := map[bool]string{true: "firing", false: "resolved"}[n%2 == 1]; a.State != want {
		p.err = fmt.Errorf("probe %d: alert %s, want %s: %s", n, a.State, want, m.Payload())
		return
	}
	if _, ok := p.seen[asAlert][n]; !ok {
		p.seen[asAlert][n] = now
	}
}

// publish sends the next probe at QoS 1 and returns its number.
func (p *probes) publish() (int, error) {
	p.mu.Lock()
	p.next++
	n := p.next
	p.mu.Unlock()
	now := time.Now()
	payload := fmt.Sprintf(`{"ts":%d,"%s":%d}`, now.UnixMilli(), probeMetric, n)
	p.mu.Lock()
	if p.alerts != nil {
		level := n
		if n%2 == 0 {
			level = -n
		}
		payload = fmt.Sprintf(`{"ts":%d,"%s":%d,"%s":%d}`, now.UnixMilli(), probeMetric, n, probeAlertMetric, level)
	}
	p.sent[n] = now
	p.mu.Unlock()
	t := p.mq.Publish(probeTopic, 1, false, payload)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return n, fmt.Errorf("probe %d: publish: %v", n, t.Error())
	}
	return n, nil
}

// pollLake records when each probe first answers a query of the lake.
func (p *probes) pollLake(ctx context.Context, cloudURL string, since time.Time) error {
	q := url.Values{"device": {probeDevice}, "metric": {probeMetric}, "from": {since.Add(-time.Minute).UTC().Format(time.RFC3339Nano)},
		"limit": {"100000"}}
	var res struct {
		Points []struct {
			Value float64 `json:"value"`
		} `json:"points"`
	}
	if err := stack.GetJSON(ctx, cloudURL+"/api/v1/query?"+q.Encode(), &res); err != nil {
		return err
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pt := range res.Points {
		if _, ok := p.seen[inLake][int(pt.Value)]; !ok {
			p.seen[inLake][int(pt.Value)] = now
		}
	}
	return nil
}

// arrived reports whether every probe in [from, to] reached where, and any
// error seen decoding batches or alerts.
func (p *probes) arrived(from, to int, where place) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := p.seen[where]
	for n := from; n <= to; n++ {
		if _, ok := seen[n]; !ok {
			return false, p.err
		}
	}
	return true, p.err
}

// latencies returns the ms from publish to arrival of probes [from, to].
func (p *probes) latencies(from, to int, where place) []float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := p.seen[where]
	var ms []float64
	for n := from; n <= to; n++ {
		if t, ok := seen[n]; ok {
			ms = append(ms, float64(t.Sub(p.sent[n]).Microseconds())/1000)
		}
	}
	return ms
}

// sentBetween returns the first and last probe published within [a, b].
func (p *probes) sentBetween(a, b time.Time) (first, last int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	first = -1
	for n := 1; n <= p.next; n++ {
		t, ok := p.sent[n]
		if !ok || t.Before(a) || t.After(b) {
			continue
		}
		if first < 0 {
			first = n
		}
		last = n
	}
	return first, last
}

func (p *probes) close() {
	if p.nc != nil {
		p.nc.Close()
	}
	p.mu.Lock()
	a := p.alerts
	p.mu.Unlock()
	if a != nil {
		a.Disconnect(250)
	}
	p.mq.Disconnect(250)
}
