package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/schemas/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startBroker runs a broker on a random loopback port until the test ends.
func startBroker(t *testing.T, cfg Config) *Broker {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	b, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return b
}

func connect(t *testing.T, b *Broker, id string, clean bool, onMessage paho.MessageHandler, user, pass string) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().
		AddBroker("tcp://" + b.Addr()).
		SetClientID(id).
		SetCleanSession(clean).
		SetUsername(user).
		SetPassword(pass).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second)
	if onMessage != nil {
		// A persistent session's queued messages may arrive before any
		// Subscribe call, so they go to the default handler.
		opts.SetDefaultPublishHandler(onMessage)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

func wait(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("%s timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// checkFor polls cond until it holds or the deadline passes.
func checkFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type inbox struct {
	mu   sync.Mutex
	msgs []string
}

func (in *inbox) handle(_ paho.Client, m paho.Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs = append(in.msgs, m.Topic()+" "+string(m.Payload()))
}

func (in *inbox) has(want ...string) func() error {
	return func() error {
		in.mu.Lock()
		defer in.mu.Unlock()
		if len(in.msgs) < len(want) {
			return fmt.Errorf("received %d messages %q, want %q", len(in.msgs), in.msgs, want)
		}
		for _, w := range want {
			found := false
			for _, m := range in.msgs {
				found = found || m == w
			}
			if !found {
				return fmt.Errorf("received %q, want %q among them", in.msgs, w)
			}
		}
		return nil
	}
}

func TestPublishSubscribeQoS1(t *testing.T) {
	b := startBroker(t, DefaultConfig())
	var in inbox
	sub, err := connect(t, b, "sub", true, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(100)
	wait(t, sub.Subscribe("devices/+/telemetry", 1, in.handle), "subscribe")
	pub, err := connect(t, b, "pub", true, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(100)
	for i := range 3 {
		wait(t, pub.Publish(fmt.Sprintf("devices/d%d/telemetry", i), 1, false, fmt.Sprintf(`{"n":%d}`, i)), "publish")
	}
	wait(t, pub.Publish("devices/d9/status", 1, false, "ignored"), "publish")
	checkFor(t, 10*time.Second, in.has(`devices/d0/telemetry {"n":0}`, `devices/d1/telemetry {"n":1}`, `devices/d2/telemetry {"n":2}`))
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.msgs) != 3 {
		t.Errorf("received %q, want only the 3 telemetry messages", in.msgs)
	}
}

func TestPersistentSessionGetsQueuedMessages(t *testing.T) {
	b := startBroker(t, DefaultConfig())
	var first inbox
	sub, err := connect(t, b, "agent", false, first.handle, "", "")
	if err != nil {
		t.Fatal(err)
	}
	wait(t, sub.Subscribe("devices/#", 1, nil), "subscribe")
	pub, err := connect(t, b, "device", true, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(100)
	wait(t, pub.Publish("devices/d1/telemetry", 1, false, "before"), "publish")
	checkFor(t, 10*time.Second, first.has("devices/d1/telemetry before"))
	sub.Disconnect(100)
	// paho's Disconnect returns once DISCONNECT is sent; until the broker
	// has closed the connection, a message may still go to it.
	checkFor(t, 10*time.Second, func() error {
		if cl, ok := b.srv.Clients.Get("agent"); ok && !cl.Closed() {
			return errors.New("the broker still has the agent's first connection open")
		}
		return nil
	})

	// The broker acknowledged these, so it must hold them for the session.
	for i := range 3 {
		wait(t, pub.Publish("devices/d1/telemetry", 1, false, fmt.Sprintf("offline-%d", i)), "publish while the subscriber is away")
	}

	var second inbox
	sub, err = connect(t, b, "agent", false, second.handle, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(100)
	checkFor(t, 10*time.Second, func() error {
		err := second.has("devices/d1/telemetry offline-0", "devices/d1/telemetry offline-1", "devices/d1/telemetry offline-2")()
		if err != nil {
			first.mu.Lock()
			defer first.mu.Unlock()
			return fmt.Errorf("%w (the first connection received %q)", err, first.msgs)
		}
		return nil
	})
}

func TestUsers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Users = []User{{Username: "device", Password: "s3cret*"}, {Username: "agent", Password: "other"}}
	b := startBroker(t, cfg)
	tests := []struct {
		user, pass string
		ok         bool
	}{
		{"device", "s3cret*", true},
		{"agent", "other", true},
		{"device", "s3cret*extra", false}, // "*" is no wildcard
		{"device", "other", false},
		{"nobody", "other", false},
		{"", "", false},
	}
	for i, tt := range tests {
		c, err := connect(t, b, fmt.Sprintf("c%d", i), true, nil, tt.user, tt.pass)
		if (err == nil) != tt.ok {
			t.Errorf("login %q/%q: err %v, want ok=%v", tt.user, tt.pass, err, tt.ok)
		}
		if c != nil {
			c.Disconnect(100)
		}
	}
}

func TestListenErrors(t *testing.T) {
	b := startBroker(t, DefaultConfig())
	cfg := DefaultConfig()
	cfg.Listen = b.Addr()
	taken, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := taken.Run(context.Background()); err == nil || !strings.Contains(err.Error(), b.Addr()) {
		t.Errorf("Run on a taken port: %v, want an error naming %s", err, b.Addr())
	}
}

func TestDisabled(t *testing.T) {
	b, err := New(Config{Listen: "not an address"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(); err != nil || b.Addr() != "" {
		t.Fatalf("disabled broker: Listen %v, Addr %q", err, b.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("a disabled broker's Run returned before its context ended: %v", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRunStopsWithContextAndClientsConnected(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	b, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	c, err := connect(t, b, "lingering", false, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	c.Disconnect(0)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		key    string
	}{
		{"listen", func(c *Config) { c.Listen = "1883" }, "broker.listen"},
		{"empty username", func(c *Config) { c.Users = []User{{Password: "p"}} }, "broker.users[0].username"},
		{"duplicate username", func(c *Config) { c.Users = []User{{"a", "p"}, {"a", "q"}} }, "broker.users[1].username"},
		{"empty password", func(c *Config) { c.Users = []User{{"a", ""}} }, "broker.users[0].password"},
		{"tiny packets", func(c *Config) { c.MaxPacketBytes = 100 }, "broker.max_packet_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			var cerr *config.Error
			if err := cfg.Validate(); !errors.As(err, &cerr) || cerr.Key != tt.key {
				t.Fatalf("Validate() = %v, want a config error for %s", err, tt.key)
			}
			if _, err := New(cfg, nil); err == nil {
				t.Error("New accepted an invalid configuration")
			}
			cfg.Enabled = false
			if err := cfg.Validate(); err != nil {
				t.Errorf("a disabled broker's settings are not checked, got %v", err)
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestDropsAreCounted: a subscriber that does not acknowledge makes the
// broker drop messages beyond max_inflight, and every drop is counted.
func TestDropsAreCounted(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxInflight = 5
	b := startBroker(t, cfg)
	var got atomic.Int64
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("slow").
		SetAutoAckDisabled(true).SetAutoReconnect(false))
	wait(t, sub.Connect(), "connect subscriber")
	defer sub.Disconnect(50)
	wait(t, sub.Subscribe("t/#", 1, func(paho.Client, paho.Message) { got.Add(1) }), "subscribe")
	pub, err := connect(t, b, "pub", true, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(50)
	const n = 20
	for i := range n {
		wait(t, pub.Publish("t/x", 1, false, fmt.Sprint(i)), "publish")
	}
	checkFor(t, 5*time.Second, func() error {
		if d := b.Dropped(); got.Load()+d != n {
			return fmt.Errorf("delivered %d + dropped %d != %d published", got.Load(), d, n)
		}
		return nil
	})
	if b.Dropped() < n-int64(cfg.MaxInflight) {
		t.Fatalf("dropped %d, want at least %d", b.Dropped(), n-cfg.MaxInflight)
	}
}
