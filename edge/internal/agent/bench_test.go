package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/updraft-io/updraft/edge/internal/rules"
)

// BenchmarkAlertLatency measures, while the agent ingests a background load
// of 10,000 MQTT messages/s (QoS 1, one reading each, made durable in the
// buffer), how long a triggering message takes from its arrival at the
// agent until the alert it raises reaches a subscriber of the local broker
// (p50-ms, p99-ms, max-ms). Arrival is the alert's "at": the agent clock
// when the rule engine saw the decoded reading, microseconds after the
// MQTT packet was read; the span ends when the subscriber's callback runs,
// so it also holds the broker's hop to the subscriber: an upper bound.
// The span from the trigger's publication by its client, which adds the
// broker's queue towards the agent (behind the load, acknowledged only once
// durable), is reported as client-p50-ms, client-p99-ms, client-max-ms.
// One trigger per b.N, every 10 ms, alternating between firing (35) and
// resolving (20) a threshold rule.
//
//	go test ./edge/internal/agent -run XXX -bench AlertLatency -benchtime 1000x
func BenchmarkAlertLatency(b *testing.B) {
	b.StopTimer()
	ns := runJetStream(b)
	cfg := DefaultConfig()
	mqttAddr := freeAddr(b)
	cfg.Broker.Enabled, cfg.Broker.Listen = true, mqttAddr
	cfg.MQTT.Broker = "tcp://" + mqttAddr
	cfg.NATS.URL = ns.ClientURL()
	cfg.Buffer.Dir = b.TempDir()
	cfg.HTTP.Addr = ""
	cfg.Rules = []rules.Rule{{Name: "hot", Kind: rules.KindThreshold, Metric: "temperature", Above: f64(30), Hysteresis: 1}}
	a, err := New(cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			b.Errorf("agent: %v", err)
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); a.ready() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("agent not ready: %v", a.ready())
		}
	}
	connect := func(id string) mqtt.Client {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(cfg.MQTT.Broker).SetClientID(id).SetMaxResumePubInFlight(1 << 16))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("connect: %v", tok.Error())
		}
		return c
	}
	sub, load, trig := connect("bench-sub"), connect("bench-load"), connect("bench-trigger")
	defer sub.Disconnect(50)
	defer load.Disconnect(50)
	defer trig.Disconnect(50)

	var mu sync.Mutex
	sent := map[int64]time.Time{} // reading time (ms) -> published at
	var lat, client []time.Duration
	got := make(chan struct{}, 1<<16)
	tok := sub.Subscribe("updraft/alerts/#", 0, func(_ mqtt.Client, m mqtt.Message) {
		now := time.Now()
		var al rules.Alert
		if json.Unmarshal(m.Payload(), &al) != nil || al.EventTime == nil {
			return
		}
		mu.Lock()
		if at, ok := sent[al.EventTime.UnixMilli()]; ok {
			client = append(client, now.Sub(at))
			lat = append(lat, now.Sub(al.At))
			got <- struct{}{}
		}
		mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}

	// Background load: 10 messages every millisecond.
	var loadSent atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		base := start.Add(-time.Minute).UnixMilli()
		var n int64
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			// Catch up to 10 per elapsed millisecond so the rate holds even when ticks are late.
			for due := time.Since(start).Milliseconds() * 10; n < due; n++ {
				p := fmt.Sprintf(`{"ts":%d,"temperature":20}`, base+n/100)
				load.Publish(fmt.Sprintf("devices/load-%d/telemetry", n%100), 1, false, p)
			}
			loadSent.Store(n)
		}
	}()
	time.Sleep(time.Second) // let the load reach its rate before measuring

	b.StartTimer()
	loadStart, loadFrom := time.Now(), loadSent.Load()
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range b.N {
		v := 35.0
		if i%2 == 1 {
			v = 20
		}
		ts := base + int64(i)
		mu.Lock()
		sent[ts] = time.Now()
		mu.Unlock()
		trig.Publish("devices/trigger/telemetry", 1, false, fmt.Sprintf(`{"ts":%d,"temperature":%g}`, ts, v))
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			b.Fatalf("alert %d not received", i)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	rate := float64(loadSent.Load()-loadFrom) / time.Since(loadStart).Seconds()
	stopLoad()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, x := range []struct {
		prefix string
		ds     []time.Duration
	}{{"", lat}, {"client-", client}} {
		slices.Sort(x.ds)
		ms := func(p float64) float64 { return float64(x.ds[int(p*float64(len(x.ds)-1))].Microseconds()) / 1000 }
		b.ReportMetric(ms(0.5), x.prefix+"p50-ms")
		b.ReportMetric(ms(0.99), x.prefix+"p99-ms")
		b.ReportMetric(ms(1), x.prefix+"max-ms")
	}
	b.ReportMetric(rate, "load-msgs/s")
	st := a.live.Load().in.Stats()
	b.ReportMetric(float64(st.Acked), "load-acked")
}
