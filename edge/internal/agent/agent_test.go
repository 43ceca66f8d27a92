package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Badger and the NATS server keep process-wide helpers.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2.(*defaultPolicy[...]).processItems"),
	)
}

func runJetStream(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestAgentForwardsDurably runs the agent with its embedded broker against an
// embedded JetStream server: readings published over MQTT arrive in the
// stream as valid batches, each exactly once.
func TestAgentForwardsDurably(t *testing.T) {
	ns := runJetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.local.>"},
		Duplicates: 10 * time.Minute, Storage: jetstream.FileStorage})
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
	a, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()

	// Wait until the agent is subscribed, or early messages would not be routed to it.
	deadline := time.Now().Add(20 * time.Second)
	for a.ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %v", a.ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(cfg.MQTT.Broker).SetClientID("pub"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer pub.Disconnect(50)
	const n = 500
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range n {
		p := fmt.Sprintf(`{"ts":%d,"temperature":%d.5,"humidity":%d}`, base+int64(i), i, i%100)
		tok := pub.Publish("devices/dev-"+strconv.Itoa(i%5)+"/telemetry", 1, false, p)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}

	seen := map[string]float64{}
	// Raw batches only: the agent also publishes aggregates (.agg).
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"telemetry.local.lab.edge-1.raw"}})
	if err != nil {
		t.Fatal(err)
	}
	for len(seen) < 2*n {
		m, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second))
		if err != nil {
			t.Fatalf("after %d readings: %v", len(seen), err)
		}
		b, err := batch.Decode(m.Subject(), nats.Header(m.Headers()), m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if b.ID.Edge != (schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}) {
			t.Fatalf("batch from %v", b.ID.Edge)
		}
		for _, r := range b.Readings {
			k := fmt.Sprintf("%s/%s/%d", r.Device, r.Metric, r.TS)
			if _, dup := seen[k]; dup {
				t.Fatalf("reading %s twice", k)
			}
			seen[k] = r.Value
		}
	}
	if v := seen[fmt.Sprintf("dev-2/temperature/%d", (base+7)*1e6)]; v != 7.5 {
		t.Fatalf("dev-2 temperature at message 7 = %v, want 7.5", v)
	}
}

// TestAgentStopsWhileIntakeWaits: with policy block and the buffer full, the
// agent holds 16,384 readings of MQTT messages and stops reading from the
// broker, its MQTT delivery goroutine waiting for room; stopping the agent
// must still end Run (paho's Disconnect gives up on that goroutine after its
// quiesce time, and the buffer's shutdown then ends the wait).
func TestAgentStopsWhileIntakeWaits(t *testing.T) {
	cfg := DefaultConfig()
	mqttAddr := freeAddr(t)
	cfg.Broker.Enabled, cfg.Broker.Listen = true, mqttAddr
	cfg.MQTT.Broker = "tcp://" + mqttAddr
	cfg.NATS.URL = "nats://" + freeAddr(t) // nothing listens: the uplink stays down
	cfg.Buffer.Dir = t.TempDir()
	cfg.Buffer.MaxBytes = buffer.MinMaxBytes
	cfg.Buffer.Policy = buffer.PolicyBlock
	cfg.HTTP.Addr = ""
	a, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for a.ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %v", a.ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(cfg.MQTT.Broker).SetClientID("pub").SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	// 250 messages of 200 readings: 50,000 readings, more than the buffer
	// takes before it blocks plus what the agent holds. The limit is checked
	// after each commit, and on a slow machine one commit can take most of
	// a bound's worth (16,384 readings) past it: with 30,000 readings a run
	// once had 17,400 committed, and the rest fell short of the bound.
	const msgs, per = 250, 200
	base := time.Now().Add(-time.Minute).UnixMilli()
	for i := range msgs {
		var p strings.Builder
		fmt.Fprintf(&p, `{"ts":%d`, base+int64(i))
		for j := range per {
			fmt.Fprintf(&p, `,"m%d":%d.5`, j, i)
		}
		p.WriteString("}")
		if tok := pub.Publish("devices/dev-"+strconv.Itoa(i%5)+"/telemetry", 1, false, p.String()); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	pub.Disconnect(50) // every message is with the broker
	// The agent's intake stops: the buffer is blocked and the messages
	// received stop growing short of all of them.
	p := a.live.Load()
	last, since := uint64(0), time.Now()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := p.in.Stats().Received
		if got != last {
			last, since = got, time.Now()
		}
		if p.buf.Stats().Blocked && got > 0 && got < msgs && time.Since(since) > time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("intake did not stop: %d of %d messages received, buffer %+v", got, msgs, p.buf.Stats())
		}
	}
	st := p.buf.Stats()
	t.Logf("intake stopped after %d of %d messages (%d readings); buffer %d queued, %d intake waits", last, msgs, last*per, st.QueuedReadings, st.IntakeWaits)
	if st.IntakeWaits != 1 || st.QueuedReadings < 16384 {
		t.Fatalf("intake stopped with %d readings queued and %d waits, want the bound of 16,384 and 1 wait", st.QueuedReadings, st.IntakeWaits)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent still running 30 s after it was stopped")
	}
}
