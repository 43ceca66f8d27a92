package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/updraft-io/updraft/schemas/config"
	"github.com/updraft-io/updraft/tools/internal/mqtttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type received struct {
	topic   string
	payload []byte
}

// subscriber counts what the broker delivers, at QoS 1, in delivery order.
type subscriber struct {
	mu   sync.Mutex
	msgs []received
}

func subscribe(t testing.TB, broker string) *subscriber {
	t.Helper()
	s := &subscriber{}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID("test-subscriber").SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := c.Subscribe("devices/+/telemetry", 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, received{m.Topic(), slices.Clone(m.Payload())})
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return s
}

func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func (s *subscriber) all() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testConfig(broker string) Config {
	c := DefaultConfig()
	c.Broker = broker
	c.Devices = 20
	c.Connections = 3
	c.Rate = 0
	c.Progress = 0
	return c
}

func run(t testing.TB, c Config) (*Sim, Summary) {
	t.Helper()
	s, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetProgressOutput(io.Discard, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return s, s.Summary()
}

func TestRunQoS1SummaryMatchesSubscriber(t *testing.T) {
	broker := mqtttest.Start(t)
	sub := subscribe(t, broker)
	c := testConfig(broker)
	c.Messages = 3000
	c.Summary = filepath.Join(t.TempDir(), "out", "summary.json")
	_, sum := run(t, c)

	if sum.Messages != c.Messages || sum.Sent != c.Messages || sum.Errors != 0 || sum.Readings != 3*c.Messages || sum.QoS != 1 {
		t.Fatalf("summary: %+v", sum)
	}
	waitFor(t, 10*time.Second, "the subscriber to receive every message", func() bool { return int64(sub.count()) >= sum.Messages })
	msgs := sub.all()
	if int64(len(msgs)) != sum.Messages {
		t.Fatalf("subscriber got %d messages, summary says %d", len(msgs), sum.Messages)
	}

	readings := map[string]int64{}
	lastTS := map[string]int64{}
	for _, m := range msgs {
		parts := strings.Split(m.topic, "/")
		if len(parts) != 3 || parts[0] != "devices" || parts[2] != "telemetry" {
			t.Fatalf("topic %q", m.topic)
		}
		dev := parts[1]
		var p map[string]float64
		if err := json.Unmarshal(m.payload, &p); err != nil {
			t.Fatalf("payload %s: %v", m.payload, err)
		}
		ts := int64(p["ts"])
		if ts <= lastTS[dev] {
			t.Fatalf("%s: ts %d after %d", dev, ts, lastTS[dev])
		}
		lastTS[dev] = ts
		readings[dev] += int64(len(p) - 1)
	}
	if len(readings) != c.Devices {
		t.Errorf("%d devices published, want %d", len(readings), c.Devices)
	}
	for dev, n := range readings {
		if sum.Devices[dev] != n {
			t.Errorf("%s: subscriber counted %d readings, summary %d", dev, n, sum.Devices[dev])
		}
	}
	if _, ok := readings["dev-00001"]; !ok {
		t.Error("no dev-00001")
	}

	data, err := os.ReadFile(c.Summary)
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"readings", "messages", "devices", "qos", "started", "finished", "errors"} {
		if _, ok := file[key]; !ok {
			t.Errorf("summary file lacks %q: %s", key, data)
		}
	}
	if file["readings"] != float64(9000) || len(file["devices"].(map[string]any)) != c.Devices {
		t.Errorf("summary file: %s", data)
	}
}

// Each device publishes on one connection, so its messages reach the broker
// in order and are the same for a seed in every run.
func TestRunDeterministicPerDevice(t *testing.T) {
	perDevice := func(seed int64) map[string][]string {
		broker := mqtttest.Start(t)
		sub := subscribe(t, broker)
		c := testConfig(broker)
		c.Messages = 600
		c.Seed = seed
		c.Timestamps = false
		_, sum := run(t, c)
		waitFor(t, 10*time.Second, "delivery", func() bool { return int64(sub.count()) >= sum.Messages })
		out := map[string][]string{}
		for _, m := range sub.all() {
			out[m.topic] = append(out[m.topic], string(m.payload))
		}
		return out
	}
	a, b, other := perDevice(7), perDevice(7), perDevice(8)
	if len(a) != 20 {
		t.Fatalf("%d devices", len(a))
	}
	for topic, msgs := range a {
		if !slices.Equal(msgs, b[topic]) {
			t.Fatalf("%s: payloads differ between runs with the same seed:\n%v\n%v", topic, msgs[:3], b[topic][:min(3, len(b[topic]))])
		}
		if slices.Equal(msgs, other[topic]) {
			t.Errorf("%s: same payloads for another seed", topic)
		}
	}
}

func TestRunQoS0(t *testing.T) {
	broker := mqtttest.Start(t)
	sub := subscribe(t, broker)
	c := testConfig(broker)
	c.QoS = 0
	c.Messages = 500
	c.Rate = 5000
	_, sum := run(t, c)
	if sum.QoS != 0 || sum.Messages != 500 || sum.Errors != 0 {
		t.Fatalf("summary %+v", sum)
	}
	// QoS 0 may lose messages by design; on a local broker it does not.
	waitFor(t, 10*time.Second, "delivery", func() bool { return sub.count() == 500 })
}

func TestRunRespectsRate(t *testing.T) {
	broker := mqtttest.Start(t)
	c := testConfig(broker)
	c.Rate = 2000
	c.Duration = 300 * time.Millisecond
	_, sum := run(t, c)
	elapsed := sum.Finished.Sub(sum.Started)
	// Pacing never runs ahead of the schedule by more than a millisecond;
	// a slow machine may fall behind, so only the upper bound is checked.
	limit := int64(c.Rate*c.Duration.Seconds()*1.05) + 5
	if sum.Sent > limit || sum.Sent == 0 {
		t.Errorf("sent %d messages in %s at %g/s; want 1..%d", sum.Sent, elapsed, c.Rate, limit)
	}

	c.Duration = 0
	c.Rate = 1000
	c.Messages = 100
	_, sum = run(t, c)
	if elapsed := sum.Finished.Sub(sum.Started); elapsed < 95*time.Millisecond {
		t.Errorf("100 messages at 1000/s took %s", elapsed)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPAndStop(t *testing.T) {
	broker := mqtttest.Start(t)
	c := testConfig(broker)
	c.Rate = 500
	c.HTTP.Addr = "127.0.0.1:0"
	s, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetProgressOutput(io.Discard, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Publishing():
	case err := <-done:
		t.Fatalf("run ended: %v", err)
	}
	base := s.HTTPURL()
	var st Status
	waitFor(t, 10*time.Second, "status to show acked messages", func() bool {
		getJSON(t, base+"/api/v1/status", &st)
		return st.Messages > 10
	})
	if !st.Running || st.Target != 500 || st.Readings != 3*st.Messages || len(st.Devices) == 0 || st.Broker != broker {
		t.Errorf("status %+v", st)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"updraft_sim_messages_acked_total", "updraft_sim_readings_acked_total", "updraft_sim_devices 20"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}

	cancel() // stopping is the normal end of an open-ended run
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sum := s.Summary()
	if sum.Finished.IsZero() || sum.Messages < st.Messages || sum.Sent != sum.Messages+sum.Errors {
		t.Errorf("summary after stop: %+v", sum)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

func TestTerminalProgress(t *testing.T) {
	broker := mqtttest.Start(t)
	c := testConfig(broker)
	c.Rate = 1000
	c.Messages = 300
	c.Progress = 50 * time.Millisecond
	s, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s.SetProgressOutput(&out, true)
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.HasPrefix(got, "\rsent ") || !strings.HasSuffix(got, "\n") || !strings.Contains(got, "acked 300 ") {
		t.Errorf("progress output %q", got)
	}
}

func TestConnectGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := testConfig("tcp://" + addr)
	c.ConnectTimeout = 700 * time.Millisecond
	s, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("want an error naming %s, got %v", addr, err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		key string
		set func(c *Config)
	}{
		{"broker", func(c *Config) { c.Broker = "127.0.0.1:1883" }},
		{"broker", func(c *Config) { c.Broker = "http://x:1" }},
		{"devices", func(c *Config) { c.Devices = 0 }},
		{"rate", func(c *Config) { c.Rate = -1 }},
		{"duration", func(c *Config) { c.Duration = -time.Second }},
		{"messages", func(c *Config) { c.Messages = -1 }},
		{"qos", func(c *Config) { c.QoS = 2 }},
		{"connections", func(c *Config) { c.Connections = 100 }},
		{"max_inflight", func(c *Config) { c.MaxInFlight = 0 }},
		{"client_id_prefix", func(c *Config) { c.ClientIDPrefix = "" }},
		{"username", func(c *Config) { c.Password = "secret" }},
		{"topic", func(c *Config) { c.Topic = "devices/telemetry" }},
		{"topic", func(c *Config) { c.Topic = "devices/+/{device}" }},
		{"period", func(c *Config) { c.Period = 0 }},
		{"metrics", func(c *Config) { c.Metrics = nil }},
		{"metrics[1].name", func(c *Config) { c.Metrics[1].Name = "temperature" }},
		{"metrics[0].name", func(c *Config) { c.Metrics[0].Name = "ts" }},
		{"metrics[2].name", func(c *Config) { c.Metrics[2].Name = "air.pressure" }},
		{"metrics[0].resolution", func(c *Config) { c.Metrics[0].Resolution = 0 }},
		{"metrics[0].noise", func(c *Config) { c.Metrics[0].Noise = -1 }},
		{"connect_timeout", func(c *Config) { c.ConnectTimeout = 0 }},
		{"drain_timeout", func(c *Config) { c.DrainTimeout = 0 }},
		{"progress", func(c *Config) { c.Progress = -time.Second }},
		{"http.addr", func(c *Config) { c.HTTP.Addr = "7440" }},
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.set(&c)
		var cerr *config.Error
		if err := c.Validate(); !errors.As(err, &cerr) || cerr.Key != tt.key {
			t.Errorf("want a config error for %s, got %v", tt.key, err)
		}
	}
}

func TestConnectionsDefault(t *testing.T) {
	for _, tt := range []struct{ devices, conns, want int }{
		{1, 0, 1}, {16, 0, 1}, {17, 0, 2}, {50, 0, 4}, {10000, 0, 4}, {50, 7, 7},
	} {
		c := DefaultConfig()
		c.Devices, c.Connections = tt.devices, tt.conns
		if got := c.connections(); got != tt.want {
			t.Errorf("%d devices, connections %d: got %d, want %d", tt.devices, tt.conns, got, tt.want)
		}
	}
}

// TestLocalStackConfig keeps deploy/local/sim.yaml valid and complete: it
// must load, validate and set every key that --help documents.
func TestLocalStackConfig(t *testing.T) {
	const path = "../../../deploy/local/sim.yaml"
	c := DefaultConfig()
	if err := config.LoadFile(path, &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Broker != "tcp://127.0.0.1:1883" || c.HTTP.Addr != "127.0.0.1:7440" || len(c.Metrics) != 3 || c.Metrics[1].Unit != "%RH" {
		t.Errorf("local stack config: %+v", c)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	have := yamlKeys(doc.Content[0], "")
	var help bytes.Buffer
	config.Describe(&help, DefaultConfig())
	var want []string
	for _, line := range strings.Split(strings.TrimSpace(help.String()), "\n") {
		want = append(want, strings.Fields(line)[0])
	}
	slices.Sort(have)
	have = slices.Compact(have)
	slices.Sort(want)
	if !slices.Equal(have, want) {
		t.Errorf("%s keys differ from the settings\nfile:     %v\nsettings: %v", path, have, want)
	}
}

// yamlKeys lists the dotted paths of the leaf keys of a mapping node.
func yamlKeys(n *yaml.Node, prefix string) []string {
	var out []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := prefix+n.Content[i].Value, n.Content[i+1]
		switch {
		case val.Kind == yaml.MappingNode:
			out = append(out, yamlKeys(val, key+".")...)
		case val.Kind == yaml.SequenceNode && len(val.Content) > 0 && val.Content[0].Kind == yaml.MappingNode:
			// A list of sections, documented as key and key[].field.
			out = append(out, key)
			for _, item := range val.Content {
				out = append(out, yamlKeys(item, key+"[].")...)
			}
		default:
			out = append(out, key)
		}
	}
	return out
}
