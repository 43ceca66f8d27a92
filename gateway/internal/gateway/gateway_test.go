package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	c.NATS.Listen = "127.0.0.1:0"
	c.NATS.Monitor = "127.0.0.1:0"
	c.HTTP.Addr = "127.0.0.1:0"
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// running is a gateway started by start; stop shuts it down and returns
// Run's error.
type running struct {
	*Gateway
	stop func() error
}

func start(t *testing.T, cfg Config) running {
	t.Helper()
	g, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once bool
	var runErr error
	stop := func() error {
		if !once {
			once = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case <-g.Ready():
	case err := <-done:
		cancel()
		once, runErr = true, err
		t.Fatalf("gateway stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("gateway not ready after 30s")
	}
	return running{Gateway: g, stop: stop}
}

func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// Clients outside the region address its JetStream by domain.
	js, err := jetstream.NewWithDomain(nc, "local")
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func TestStreamsCreated(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams.Telemetry.MaxBytes = 64 << 20
	g := start(t, cfg)
	_, js := connect(t, g.ClientURL())
	ctx := context.Background()

	tests := []struct {
		name, subject string
		maxAge        time.Duration
		maxBytes      int64
		discard       jetstream.DiscardPolicy
	}{
		{"TELEMETRY", "telemetry.local.>", 7 * 24 * time.Hour, 64 << 20, jetstream.DiscardNew},
		{"EVENTS", "events.local.>", 7 * 24 * time.Hour, -1, jetstream.DiscardOld},
		{"DEADLETTER", "deadletter.local.>", 30 * 24 * time.Hour, -1, jetstream.DiscardOld},
	}
	for _, tt := range tests {
		st, err := js.Stream(ctx, tt.name)
		if err != nil {
			t.Fatalf("stream %s: %v", tt.name, err)
		}
		c := st.CachedInfo().Config
		if len(c.Subjects) != 1 || c.Subjects[0] != tt.subject || c.MaxAge != tt.maxAge || c.MaxBytes != tt.maxBytes ||
			c.Discard != tt.discard || c.Duplicates != 10*time.Minute || c.Storage != jetstream.FileStorage ||
			c.Replicas != 1 || c.Retention != jetstream.LimitsPolicy {
			t.Errorf("stream %s: %+v", tt.name, c)
		}
	}
}

func TestReconcileOnRestart(t *testing.T) {
	cfg := testConfig(t)
	g := start(t, cfg)
	nc, js := connect(t, g.ClientURL())
	ctx := context.Background()
	if _, err := js.Publish(ctx, "events.local.lab.edge-1.boot", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// An operator changes a managed setting by hand.
	st, err := js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	c.MaxAge = time.Hour
	if _, err := js.UpdateStream(ctx, c); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}

	// Same store, new limits for the telemetry stream.
	cfg.Streams.Telemetry.MaxAge = 48 * time.Hour
	cfg.Streams.Telemetry.Duplicates = 5 * time.Minute
	g = start(t, cfg)
	_, js = connect(t, g.ClientURL())
	ev, err := js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if info := ev.CachedInfo(); info.Config.MaxAge != 7*24*time.Hour || info.State.Msgs != 1 {
		t.Errorf("EVENTS after restart: max_age %v, %d messages; want 168h and the message kept", info.Config.MaxAge, info.State.Msgs)
	}
	tel, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	if c := tel.CachedInfo().Config; c.MaxAge != 48*time.Hour || c.Duplicates != 5*time.Minute {
		t.Errorf("TELEMETRY after restart: max_age %v, duplicates %v", c.MaxAge, c.Duplicates)
	}
}

func testBatch(t testing.TB, seq uint64, n int) *batch.Message {
	t.Helper()
	edge := schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}
	rs := make([]schemas.Reading, n)
	for i := range rs {
		rs[i] = schemas.Reading{
			Region: edge.Region, Site: edge.Site, Edge: edge.Edge,
			Device: fmt.Sprintf("dev-%05d", i%50+1), Metric: "temperature", Unit: "Cel",
			TS: 1732890000123000000 + int64(seq)*1e9 + int64(i)*1e6, Value: 20 + float64(i%100)/10,
		}
	}
	m, err := batch.Encode(batch.ID{Edge: edge, Epoch: 0xabc, Seq: seq}, schemas.KindRaw, false, rs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func publish(ctx context.Context, js jetstream.JetStream, m *batch.Message) (*jetstream.PubAck, error) {
	return js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
}

func TestDuplicateStoredOnce(t *testing.T) {
	g := start(t, testConfig(t))
	_, js := connect(t, g.ClientURL())
	ctx := context.Background()
	m := testBatch(t, 1, 100)
	first, err := publish(ctx, js, m)
	if err != nil {
		t.Fatal(err)
	}
	again, err := publish(ctx, js, m)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !again.Duplicate || again.Sequence != first.Sequence {
		t.Errorf("acks: first %+v, again %+v", first, again)
	}
	if _, err := publish(ctx, js, testBatch(t, 2, 100)); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 2 {
		t.Errorf("TELEMETRY holds %d messages, want 2", n)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestOpsEndpoints(t *testing.T) {
	g := start(t, testConfig(t))
	_, js := connect(t, g.ClientURL())
	ctx := context.Background()
	const n = 5
	for i := range n {
		if _, err := publish(ctx, js, testBatch(t, uint64(i+1), 50)); err != nil {
			t.Fatal(err)
		}
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, g.HTTPURL()+path); code != http.StatusOK {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}

	code, body := get(t, g.HTTPURL()+"/api/v1/status")
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, body)
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Ready || st.Region != "local" || st.Domain != "local" || st.ServerName != "gw-local-1" || st.Sync != "always" ||
		st.Connections < 1 || len(st.Streams) != 3 {
		t.Errorf("status: %s", body)
	}
	if s := st.Streams["TELEMETRY"]; s.Messages != n || s.FirstSeq != 1 || s.LastSeq != n || s.Bytes < n*100 ||
		s.LastTime.IsZero() || s.Subjects[0] != "telemetry.local.>" {
		t.Errorf("TELEMETRY status: %+v", s)
	}
	if s := st.Streams["DEADLETTER"]; s.Name != "DEADLETTER" || s.Messages != 0 {
		t.Errorf("DEADLETTER status: %+v", s)
	}
	// The path the local stack reads.
	var generic map[string]any
	if err := json.Unmarshal([]byte(body), &generic); err != nil {
		t.Fatal(err)
	}
	if v := generic["streams"].(map[string]any)["TELEMETRY"].(map[string]any)["messages"]; v != float64(n) {
		t.Errorf("streams.TELEMETRY.messages = %v", v)
	}

	code, body = get(t, g.HTTPURL()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		fmt.Sprintf(`updraft_gateway_stream_messages{account="$G",stream="TELEMETRY"} %d`, n),
		`updraft_gateway_stream_consumers{account="$G",stream="EVENTS"} 0`,
		"updraft_gateway_connections ",
		"updraft_gateway_ready 1",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// The NATS monitoring endpoints are served too.
	code, body = get(t, g.MonitorURL()+"/jsz")
	if code != http.StatusOK || !strings.Contains(body, `"streams": 3`) {
		t.Errorf("nats /jsz: %d %s", code, body)
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	tests := []struct {
		name string
		set  func(c *Config)
	}{
		{"nats", func(c *Config) { c.NATS.Listen = busy }},
		{"monitor", func(c *Config) { c.NATS.Monitor = busy }},
		{"http", func(c *Config) { c.HTTP.Addr = busy }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.set(&cfg)
			g, err := New(cfg, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = g.Run(ctx)
			if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), busy) {
				t.Fatalf("want a prompt error naming %s, got %v", busy, err)
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	g := start(t, testConfig(t))
	if err := g.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	if g.ClientURL() != "" || g.checkReady() == nil {
		t.Error("stopped gateway still reports a server")
	}
}
