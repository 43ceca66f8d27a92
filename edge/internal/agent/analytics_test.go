package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/edge/internal/rules"
	"github.com/updraft-io/updraft/schemas/batch"
)

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func f64(v float64) *float64 { return &v }

// startAgent runs an agent; a value on the returned channel makes it
// reload the configuration load returns.
func startAgent(t *testing.T, ctx context.Context, cfg Config, load func() (Config, error)) (*Agent, chan<- os.Signal) {
	t.Helper()
	a, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	sig := make(chan os.Signal)
	go func() { done <- a.RunWithReload(runCtx, sig, load) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	waitFor(t, "agent ready", 20*time.Second, func() bool { return a.ready() == nil })
	return a, sig
}

func mqttClient(t *testing.T, broker, id string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(id))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// TestAgentAlertsAndAggregates: readings over MQTT raise an alert on the
// local broker and an alert event in JetStream; their windows reach the
// buffer as agg batches, the local broker and /api/v1/latest; a reload
// with a bad rule is refused and a good one applies.
func TestAgentAlertsAndAggregates(t *testing.T) {
	ns := runJetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tel, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.local.>"}})
	if err != nil {
		t.Fatal(err)
	}
	events, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.local.>"}})
	if err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	mqttAddr := freeAddr(t)
	cfg.Broker.Enabled, cfg.Broker.Listen = true, mqttAddr
	cfg.MQTT.Broker = "tcp://" + mqttAddr
	cfg.NATS.URL = ns.ClientURL()
	cfg.Buffer.Dir = t.TempDir()
	cfg.Buffer.BatchMaxAge = 50 * time.Millisecond
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Local.Tick = 20 * time.Millisecond
	cfg.Rules = []rules.Rule{{Name: "hot", Kind: rules.KindThreshold, Metric: "temperature", Above: f64(30), Hysteresis: 1, Severity: "warning"}}
	var next atomic.Pointer[Config]
	a, hup := startAgent(t, ctx, cfg, func() (Config, error) { return *next.Load(), nil })

	sub := mqttClient(t, cfg.MQTT.Broker, "watcher")
	got := make(chan mqtt.Message, 1000)
	if tok := sub.Subscribe("updraft/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := mqttClient(t, cfg.MQTT.Broker, "pub")
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	send := func(dev string, at time.Time, temp float64) {
		p := fmt.Sprintf(`{"ts":%d,"temperature":%g}`, at.UnixMilli(), temp)
		if tok := pub.Publish("devices/"+dev+"/telemetry", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	// dev-1: 20, 21, ..., 29 over the first 10 s window, then 35 (fires).
	for i := range 10 {
		send("dev-1", base.Add(time.Duration(i)*time.Second), 20+float64(i))
	}
	send("dev-1", base.Add(12*time.Second), 35)

	var alert rules.Alert
	waitForMsg := func(prefix string) mqtt.Message {
		t.Helper()
		for {
			select {
			case m := <-got:
				if strings.HasPrefix(m.Topic(), prefix) {
					return m
				}
			case <-ctx.Done():
				t.Fatalf("no message on %s", prefix)
			}
		}
	}
	m := waitForMsg("updraft/alerts/")
	if m.Topic() != "updraft/alerts/lab/dev-1/hot" || !m.Retained() && m.Qos() != 1 {
		t.Errorf("alert on %s", m.Topic())
	}
	if err := json.Unmarshal(m.Payload(), &alert); err != nil {
		t.Fatal(err)
	}
	if alert.State != rules.StateFiring || alert.Rule != "hot" || alert.Device != "dev-1" || alert.Value != 35 || alert.Severity != "warning" {
		t.Fatalf("alert %+v", alert)
	}

	// Close the windows: a reading five minutes later moves dev-1's watermark.
	send("dev-1", base.Add(5*time.Minute), 10)
	m = waitForMsg("updraft/agg/lab/dev-1/temperature/10s")
	var w windowJSON
	if err := json.Unmarshal(m.Payload(), &w); err != nil {
		t.Fatal(err)
	}
	if !w.Start.Equal(base) || w.Count != 10 || *w.Min != 20 || *w.Max != 29 || *w.Sum != 245 || *w.Mean != 24.5 || *w.Last != 29 {
		t.Fatalf("window %+v", w)
	}

	// The resolution (10 is back below 29) and the firing are both events.
	waitFor(t, "alert events", 20*time.Second, func() bool {
		info, err := events.Info(ctx)
		return err == nil && info.State.Msgs == 2
	})
	ev, err := events.GetMsg(ctx, 1)
	if err != nil || ev.Subject != "events.local.lab.edge-1.alert" || !strings.Contains(string(ev.Data), `"state":"firing"`) ||
		ev.Header.Get("Updraft-Event-Kind") != "alert" {
		t.Fatalf("event %v %v", ev, err)
	}

	// Aggregates reach JetStream as agg batches.
	cons, err := tel.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"telemetry.local.lab.edge-1.agg"}})
	if err != nil {
		t.Fatal(err)
	}
	aggs := map[string]float64{}
	for aggs["temperature:count:1m"] == 0 {
		msg, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second))
		if err != nil {
			t.Fatalf("agg batch: %v (have %v)", err, aggs)
		}
		b, err := batch.Decode(msg.Subject(), nats.Header(msg.Headers()), msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range b.Readings {
			if r.TS == base.UnixNano() && r.Device == "dev-1" {
				aggs[r.Metric] = r.Value
			}
		}
	}
	if aggs["temperature:count:10s"] != 10 || aggs["temperature:mean:10s"] != 24.5 || aggs["temperature:count:1m"] != 11 || aggs["temperature:max:1m"] != 35 {
		t.Errorf("aggregates %v", aggs)
	}

	// The latest value and windows over HTTP.
	resp, err := http.Get(a.HTTPURL() + "/api/v1/latest?device=dev-1")
	if err != nil {
		t.Fatal(err)
	}
	var latest Latest
	err = json.NewDecoder(resp.Body).Decode(&latest)
	resp.Body.Close()
	if err != nil || len(latest.Series) != 1 {
		t.Fatalf("latest: %+v %v", latest, err)
	}
	s := latest.Series[0]
	if s.Metric != "temperature" || s.Value != 10 || !s.TS.Equal(base.Add(5*time.Minute)) || s.Windows["10s"].Count == 0 || s.Windows["1m"].Count == 0 {
		t.Errorf("latest %+v", s)
	}

	// Reload: a bad rule is refused, the old rule keeps running.
	bad := cfg
	bad.Rules = []rules.Rule{{Name: "cold", Kind: rules.KindThreshold, Metric: "temperature"}}
	if err := a.Reload(bad); err == nil || !strings.Contains(err.Error(), "rules[0].above") {
		t.Fatalf("bad reload: %v", err)
	}
	next.Store(&bad)
	hup <- syscall.SIGHUP
	good := cfg
	good.Rules = append(slices.Clone(good.Rules), rules.Rule{Name: "cold", Kind: rules.KindThreshold, Metric: "temperature", Below: f64(0)})
	next.Store(&good)
	hup <- syscall.SIGHUP
	waitFor(t, "reload", 10*time.Second, func() bool { return len(a.live.Load().an.eng.Rules()) == 2 })
	send("dev-2", base.Add(5*time.Minute), -5)
	m = waitForMsg("updraft/alerts/")
	if m.Topic() != "updraft/alerts/lab/dev-2/cold" {
		t.Fatalf("after reload: alert on %s", m.Topic())
	}
}

// fakeClock is the agent clock under test control.
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

// TestAgentAbsence: a device that goes silent raises the absence alert on
// the local broker once the agent clock passes `for`, and its next reading
// resolves it.
func TestAgentAbsence(t *testing.T) {
	ns := runJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	mqttAddr := freeAddr(t)
	cfg.Broker.Enabled, cfg.Broker.Listen = true, mqttAddr
	cfg.MQTT.Broker = "tcp://" + mqttAddr
	cfg.NATS.URL = ns.ClientURL()
	cfg.Buffer.Dir = t.TempDir()
	cfg.HTTP.Addr = ""
	cfg.Local.Tick = 10 * time.Millisecond
	cfg.Rules = []rules.Rule{{Name: "silent", Kind: rules.KindAbsence, For: 30 * time.Second}}
	clk := &fakeClock{t: time.Now()}
	a, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.now = clk.Now
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	// A cleanup, not a defer: the MQTT clients below must disconnect first.
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	waitFor(t, "agent ready", 20*time.Second, func() bool { return a.ready() == nil })

	got := make(chan rules.Alert, 10)
	sub := mqttClient(t, cfg.MQTT.Broker, "watcher")
	if tok := sub.Subscribe("updraft/alerts/lab/+/silent", 1, func(_ mqtt.Client, m mqtt.Message) {
		var al rules.Alert
		if json.Unmarshal(m.Payload(), &al) == nil {
			got <- al
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := mqttClient(t, cfg.MQTT.Broker, "pub")
	send := func() {
		p := fmt.Sprintf(`{"ts":%d,"temperature":20}`, time.Now().UnixMilli())
		if tok := pub.Publish("devices/dev-1/telemetry", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	send()
	waitFor(t, "reading seen", 10*time.Second, func() bool { return len(a.live.Load().an.latest.snapshot("dev-1", "")) == 1 })
	clk.Advance(29 * time.Second)
	select {
	case al := <-got:
		t.Fatalf("fired after 29s: %+v", al)
	case <-time.After(200 * time.Millisecond):
	}
	clk.Advance(time.Second)
	select {
	case al := <-got:
		if al.State != rules.StateFiring || al.Device != "dev-1" || al.Value < 30 {
			t.Fatalf("alert %+v", al)
		}
	case <-ctx.Done():
		t.Fatal("no absence alert")
	}
	send()
	select {
	case al := <-got:
		if al.State != rules.StateResolved || al.Device != "dev-1" {
			t.Fatalf("alert %+v", al)
		}
	case <-ctx.Done():
		t.Fatal("no resolution")
	}
}
