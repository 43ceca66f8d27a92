package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/cloud/internal/ingest"
	"github.com/updraft-io/updraft/cloud/internal/natstest"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	"github.com/updraft-io/updraft/schemas/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server waits up to its source-consumer timeout for a region
		// that never answered (none is connected in TestServerWithHub) and
		// does not stop that wait on shutdown.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}

func get(t *testing.T, u string, into any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("GET %s: %v in %s", u, err, body)
		}
	}
	return resp.StatusCode
}

// TestServer runs the whole process against a JetStream domain: readiness
// follows the stream, published batches become queryable, and the status
// and metrics report them.
func TestServer(t *testing.T) {
	srv := natstest.Start(t, "local")
	nc, js := natstest.Connect(t, srv)
	cfg := DefaultConfig()
	cfg.NATS.URL = srv.ClientURL()
	cfg.NATS.Domain = "local"
	cfg.Lake.Dir = t.TempDir()
	cfg.Lake.RollInterval = 200 * time.Millisecond
	cfg.HTTP.Addr = "127.0.0.1:0"
	s, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	if code := get(t, s.URL()+"/healthz", nil); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if code := get(t, s.URL()+"/readyz", nil); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz = %d before the stream exists, want 503", code)
		}
		return nil
	})
	natstest.CreateTelemetry(t, js, "local", time.Minute)
	natstest.WaitFor(t, 20*time.Second, func() error {
		if code := get(t, s.URL()+"/readyz", nil); code != 200 {
			return fmt.Errorf("/readyz = %d", code)
		}
		return nil
	})

	edge := schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}
	// 100 readings a second apart, inside the previous hour so they share a partition.
	base := time.Now().UTC().Truncate(time.Hour).Add(-50 * time.Minute)
	var rs []schemas.Reading
	for i := range 100 {
		rs = append(rs, schemas.Reading{Region: "local", Site: "lab", Edge: "edge-1", Device: "pump", Metric: "rpm",
			TS: base.Add(time.Duration(i) * time.Second).UnixNano(), Value: float64(i)})
	}
	m, err := batch.Encode(batch.ID{Edge: edge, Epoch: 1, Seq: 1}, schemas.KindRaw, false, rs)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}); err != nil {
		t.Fatal(err)
	}
	var st ingest.Status
	natstest.WaitFor(t, 20*time.Second, func() error {
		// Latencies are recorded just after the commit becomes visible.
		if get(t, s.URL()+"/api/v1/status", &st); st.RowsCommitted != 100 || st.E2ELatency.Samples != 100 {
			return fmt.Errorf("status = %+v", st)
		}
		return nil
	})
	if !st.Ready || st.BatchesCommitted != 1 || st.Files != 1 || st.LastCommit == nil || st.E2ELatency.Samples != 100 ||
		st.E2ELatency.Max < 99_000 {
		t.Errorf("status = %+v", st)
	}

	var res struct {
		Points []struct {
			TS    time.Time `json:"ts"`
			Value float64   `json:"value"`
			Unit  *string   `json:"unit"`
		} `json:"points"`
		FilesRead   int `json:"files_read"`
		RowsScanned int `json:"rows_scanned"`
	}
	q := url.Values{"device": {"pump"}, "metric": {"rpm"}, "from": {base.Add(90 * time.Second).Format(time.RFC3339Nano)},
		"to": {base.Add(100 * time.Second).Format(time.RFC3339Nano)}}
	if code := get(t, s.URL()+"/api/v1/query?"+q.Encode(), &res); code != 200 {
		t.Fatalf("query = %d", code)
	}
	if len(res.Points) != 10 || res.Points[0].Value != 90 || res.Points[0].Unit != nil || res.FilesRead != 1 || res.RowsScanned != 100 {
		t.Errorf("query = %+v", res)
	}
	var bad map[string]string
	if code := get(t, s.URL()+"/api/v1/query?from=soon", &bad); code != 400 || bad["param"] != "from" {
		t.Errorf("bad query = %d %v", code, bad)
	}

	resp, err := http.Get(s.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"updraft_cloud_rows_committed_total 100", "updraft_cloud_batches_committed_total 1",
		"updraft_cloud_duplicates_skipped_total 0", `updraft_cloud_rejected_total{reason="payload"} 0`,
		"updraft_cloud_flush_duration_seconds_count 1", "updraft_cloud_e2e_latency_seconds_count 100"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestNewFailsFastAndCloses(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Lake.Dir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	s, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The lake is locked while s holds it.
	if _, err := New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("second New = %v, want the lake locked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = New(cfg, nil, nil)
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	s.Close()
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name, key string
		mut       func(*Config)
	}{
		{"defaults", "", func(*Config) {}},
		{"region", "region", func(c *Config) { c.Region = "" }},
		{"nats url", "nats.url", func(c *Config) { c.NATS.URL = "127.0.0.1:4222" }},
		{"roll rows", "lake.roll_rows", func(c *Config) { c.Lake.RollRows = -1 }},
		{"ack wait below the flush interval", "nats.ack_wait", func(c *Config) { c.NATS.AckWait = 5 * time.Second }},
		{"http addr", "http.addr", func(c *Config) { c.HTTP.Addr = "7430" }},
		{"http host", "http.addr", func(c *Config) { c.HTTP.Addr = "not a host:7430" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mut(&c)
			err := c.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var cerr *config.Error
			if !errors.As(err, &cerr) || cerr.Key != tt.key || cerr.Allowed == "" || !strings.Contains(err.Error(), "invalid value") {
				t.Fatalf("Validate() = %v, want a config error for %s naming value and allowed", err, tt.key)
			}
		})
	}
}

// TestLocalStackConfig keeps deploy/local/cloud.yaml loadable and valid.
func TestLocalStackConfig(t *testing.T) {
	c := DefaultConfig()
	path := filepath.Join("..", "..", "..", "deploy", "local", "cloud.yaml")
	if err := config.LoadFile(path, &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Lake.RollInterval != 2*time.Second || c.NATS.Domain != "local" || c.HTTP.Addr != "127.0.0.1:7430" {
		t.Errorf("local stack config = %+v", c)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
