package ingest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/updraft-io/updraft/edge/internal/broker"
	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/edge/internal/decode"
	"github.com/updraft-io/updraft/schemas"
)

// holdingSink takes messages and never makes them durable: none is acked.
type holdingSink struct {
	mu   sync.Mutex
	msgs []buffer.Message
}

func (s *holdingSink) AppendMessage(_ string, _ []schemas.Reading, m buffer.Message, _ func(error)) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
}

func (s *holdingSink) AppendDeadLetter(buffer.DeadLetter, func(error)) {}

func (s *holdingSink) taken() []buffer.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]buffer.Message(nil), s.msgs...)
}

// TestUnackedMessagesComeBackFromTheSession: the client keeps no record of
// the messages it received and has not acknowledged, and needs none: after
// a restart, the broker's persistent session sends each of them again,
// flagged DUP, with the key the buffer knows it by.
func TestUnackedMessagesComeBackFromTheSession(t *testing.T) {
	cfg, edge, subs, dec := embeddedSession(t, "ingest-session")
	start := func(sink Sink, subscribed bool) (*Ingest, func()) {
		in, stop := runIngest(t, cfg, edge, subs, dec, sink)
		if subscribed {
			waitFor(t, "subscribed", in.Connected)
		}
		return in, stop
	}

	held := new(holdingSink)
	in, stop := start(held, true)
	const n = 20
	publishTelemetry(t, cfg.Broker, n)
	waitFor(t, "every message", func() bool { return len(held.taken()) == n })
	if keys := in.store.All(); len(keys) != 0 {
		t.Errorf("the client's store holds %d records of unacknowledged messages: %v", len(keys), keys)
	}
	stop()

	// The SUBACK may come only after the re-sends, and they are never
	// acknowledged: wait for them, not for the subscription.
	again := new(holdingSink)
	_, stopAgain := start(again, false)
	waitFor(t, "the session's re-sends", func() bool { return len(again.taken()) >= n })
	stopAgain()
	first := map[uint64]bool{}
	for _, m := range held.taken() {
		first[m.Key] = true
	}
	for _, m := range again.taken() {
		if !m.Dup || !first[m.Key] {
			t.Errorf("re-sent message: DUP %v, known key %v", m.Dup, first[m.Key])
		}
	}
	if got := len(again.taken()); got != n {
		t.Errorf("the broker re-sent %d messages, want %d", got, n)
	}
}

// embeddedSession starts the agent's own embedded broker on a free port and
// returns an ingest configuration for it, with clientID, and the default
// subscriptions and decoder.
func embeddedSession(t *testing.T, clientID string) (Config, schemas.EdgeID, []decode.Subscription, *decode.Decoder) {
	t.Helper()
	bcfg := broker.DefaultConfig()
	bcfg.Listen = "127.0.0.1:0"
	brk, err := broker.New(bcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := brk.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- brk.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-served })

	edge := schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}
	dcfg := decode.DefaultConfig()
	dec, err := decode.New(dcfg, edge, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Broker, cfg.ClientID = "tcp://"+brk.Addr(), clientID
	return cfg, edge, dcfg.Subscriptions, dec
}

// publishTelemetry publishes n messages at QoS 1, one per device, each
// acknowledged by the broker before the next.
func publishTelemetry(t *testing.T, url string, n int) {
	t.Helper()
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("pub"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect publisher: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	for i := range n {
		tok := pub.Publish(fmt.Sprintf("devices/dev-%d/telemetry", i), 1, false, fmt.Sprintf(`{"temperature":%d.5}`, i))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
}
