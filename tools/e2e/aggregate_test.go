package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/parquet-go/parquet-go"

	"github.com/updraft-io/updraft/tools/internal/stack"
)

// aggRow is one row of <lake>/agg/... as parquet-go reads it (the schema of
// docs/aggregation.md).
type aggRow struct {
	TS     int64    `parquet:"ts"`
	Window string   `parquet:"window"`
	Region string   `parquet:"region"`
	Site   string   `parquet:"site"`
	Edge   string   `parquet:"edge"`
	Device string   `parquet:"device"`
	Metric string   `parquet:"metric"`
	Count  *int64   `parquet:"count,optional"`
	Min    *float64 `parquet:"min,optional"`
	Max    *float64 `parquet:"max,optional"`
	Sum    *float64 `parquet:"sum,optional"`
	Mean   *float64 `parquet:"mean,optional"`
	Last   *float64 `parquet:"last,optional"`
	Stddev *float64 `parquet:"stddev,optional"`
	P50    *float64 `parquet:"p50,optional"`
	P90    *float64 `parquet:"p90,optional"`
	P99    *float64 `parquet:"p99,optional"`
	Unit   *string  `parquet:"unit,optional"`
}

// aggReadLake reads every committed Parquet file under <lake>/agg.
func aggReadLake(dir string) ([]aggRow, error) {
	var rows []aggRow
	root := filepath.Join(dir, "agg")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && path == root {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".parquet") || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if !strings.HasPrefix(rel, "region=local"+string(filepath.Separator)+"date=") || !strings.Contains(rel, "hour=") {
			return fmt.Errorf("aggregate file %s is not under region=<r>/date=<YYYY-MM-DD>/hour=<HH>", rel)
		}
		rs, err := parquet.ReadFile[aggRow](path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		rows = append(rows, rs...)
		return nil
	})
	return rows, err
}

// TestAggregatesAndAlerts runs the whole stack with the local configuration
// (deploy/local/edge.yaml: windows 10s and 1m, rule too-hot above 30):
// readings over MQTT raise the alert on the local broker, and their windows
// reach the lake under <lake>/agg with the values computed here. SIGHUP with
// an unchanged file reloads without disturbing the agent.
func TestAggregatesAndAlerts(t *testing.T) {
	s := newStack(t, nil)
	alerts := make(chan mqtt.Message, 100)
	sub := publisher(t, s.MQTTURL(), "agg-watcher")
	if tok := sub.Subscribe("updraft/alerts/#", 1, func(_ mqtt.Client, m mqtt.Message) { alerts <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub := publisher(t, s.MQTTURL(), "agg-publisher")
	send := func(dev string, at time.Time, temp float64) {
		t.Helper()
		p := fmt.Sprintf(`{"ts":%d,"temperature":%g}`, at.UnixMilli(), temp)
		if tok := pub.Publish("devices/"+dev+"/telemetry", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}

	// Three minutes ago, one 10 s window of 20.0 .. 24.5, then 35 in the next.
	base := time.Now().Add(-3 * time.Minute).Truncate(time.Minute)
	var vals []float64
	for i := range 10 {
		v := 20 + float64(i)/2
		vals = append(vals, v)
		send("agg-dev", base.Add(time.Duration(i)*time.Second), v)
	}
	send("agg-dev", base.Add(12*time.Second), 35)

	select {
	case m := <-alerts:
		var a struct{ Rule, State, Device string }
		if err := json.Unmarshal(m.Payload(), &a); err != nil {
			t.Fatal(err)
		}
		if m.Topic() != "updraft/alerts/lab/agg-dev/too-hot" || a.Rule != "too-hot" || a.State != "firing" || a.Device != "agg-dev" {
			t.Fatalf("alert %s %s", m.Topic(), m.Payload())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no alert on the local broker")
	}

	// A later reading moves the watermark past both windows of base.
	send("agg-dev", base.Add(2*time.Minute), 21)
	if err := s.Proc(stack.Edge).Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}

	want := map[string]struct {
		count         int64
		min, max, sum float64
		last          float64
	}{
		"10s": {10, 20, 24.5, 222.5, 24.5},
		"1m":  {11, 20, 35, 257.5, 35},
	}
	var got map[string]aggRow
	waitFor(t, 90*time.Second, "aggregates of agg-dev in <lake>/agg", func() (bool, string) {
		rows, err := aggReadLake(s.LakeDir())
		if err != nil {
			return false, err.Error()
		}
		got = map[string]aggRow{}
		for _, r := range rows {
			if r.Device == "agg-dev" && r.Metric == "temperature" && r.TS == base.UnixNano() {
				got[r.Window] = r
			}
		}
		return len(got) == 2, fmt.Sprintf("%d agg rows, %d of agg-dev at %v", len(rows), len(got), base)
	})
	for win, w := range want {
		r := got[win]
		if r.Region != "local" || r.Site != "lab" || r.Edge != "edge-1" || r.Unit == nil || *r.Unit != "Cel" {
			t.Errorf("%s: identity %+v", win, r)
		}
		if r.Count == nil || *r.Count != w.count || *r.Min != w.min || *r.Max != w.max || *r.Sum != w.sum || *r.Last != w.last ||
			math.Abs(*r.Mean-w.sum/float64(w.count)) > 1e-12 {
			t.Errorf("%s: row %+v, want %+v", win, r, w)
		}
		for _, q := range []*float64{r.P50, r.P90, r.P99} {
			if q == nil || *q < w.min || *q > w.max {
				t.Errorf("%s: quantile missing or out of [min, max]", win)
			}
		}
		// Population standard deviation of the window's values.
		xs := vals
		if win == "1m" {
			xs = append(xs[:len(xs):len(xs)], 35)
		}
		mean, ss := w.sum/float64(w.count), 0.0
		for _, x := range xs {
			ss += (x - mean) * (x - mean)
		}
		if sd := math.Sqrt(ss / float64(len(xs))); r.Stddev == nil || math.Abs(*r.Stddev-sd) > 1e-9 {
			t.Errorf("%s: stddev %v, want %v", win, r.Stddev, sd)
		}
	}
	// Exact checks of quantile bounds on the 10 s window: p50 of 10 values
	// is the 5th smallest (rank 4.5 rounds down), within 1%.
	if p50 := *got["10s"].P50; math.Abs(p50-vals[4]) > 0.01*vals[4] {
		t.Errorf("p50 %v, exact %v", p50, vals[4])
	}

	// The edge logged the reload.
	log, err := os.ReadFile(s.Proc(stack.Edge).Log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "configuration reloaded") {
		t.Errorf("SIGHUP did not reload:\n%s", stack.Tail(s.Proc(stack.Edge).Log, 20))
	}
}

// TestAggregateReloadOnSIGHUP edits the edge's configuration file under a
// running agent: an invalid rule is refused on SIGHUP and the running rule
// keeps working; a valid change applies on the next SIGHUP.
func TestAggregateReloadOnSIGHUP(t *testing.T) {
	ports, err := stack.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := t.TempDir()
	for _, f := range []string{"gateway.yaml", "edge.yaml"} {
		b, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "local", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfgDir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edgeYAML := filepath.Join(cfgDir, "edge.yaml")
	orig, _ := os.ReadFile(edgeYAML)
	s := stack.New(stack.Options{Root: t.TempDir(), Bin: binDir, ConfigDir: cfgDir, Ports: ports})
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			if p := s.Proc(stack.Edge); p != nil {
				t.Logf("--- edge log (tail) ---\n%s", stack.Tail(p.Log, 40))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range []string{stack.Gateway, stack.Edge} {
		if _, err := s.Start(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	alerts := make(chan mqtt.Message, 100)
	sub := publisher(t, s.MQTTURL(), "agg-reload-watcher")
	if tok := sub.Subscribe("updraft/alerts/lab/+/too-hot", 1, func(_ mqtt.Client, m mqtt.Message) { alerts <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub := publisher(t, s.MQTTURL(), "agg-reload-publisher")
	at := time.Now().Add(-time.Minute)
	send := func(temp float64) {
		t.Helper()
		at = at.Add(time.Second)
		p := fmt.Sprintf(`{"ts":%d,"temperature":%g}`, at.UnixMilli(), temp)
		if tok := pub.Publish("devices/reload-dev/telemetry", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	var last []byte
	next := func(wantState string, wantValue float64) {
		t.Helper()
		for {
			select {
			case m := <-alerts:
				// QoS 1 is at-least-once to subscribers too: a byte-identical
				// re-delivery of the previous alert is not a new transition.
				if bytes.Equal(m.Payload(), last) {
					continue
				}
				last = m.Payload()
				var a struct {
					State string
					Value float64
				}
				if err := json.Unmarshal(m.Payload(), &a); err != nil || a.State != wantState || a.Value != wantValue {
					t.Fatalf("alert %s, want %s at %v", m.Payload(), wantState, wantValue)
				}
				return
			case <-ctx.Done():
				t.Fatalf("no %s alert", wantState)
			}
		}
	}
	hup := func(wantLog string) {
		t.Helper()
		if err := s.Proc(stack.Edge).Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "edge log: "+wantLog, func() (bool, string) {
			b, _ := os.ReadFile(s.Proc(stack.Edge).Log)
			return strings.Count(string(b), wantLog) == 1, ""
		})
	}
	edit := func(old, new string) {
		t.Helper()
		if !strings.Contains(string(orig), old) {
			t.Fatalf("deploy/local/edge.yaml has no %q", old)
		}
		if err := os.WriteFile(edgeYAML, []byte(strings.Replace(string(orig), old, new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	send(35)
	next("firing", 35)
	// An invalid file: refused, and too-hot keeps its hysteresis of 0.5.
	edit("hysteresis: 0.5", "hysteresis: -1")
	hup("rules[0].hysteresis")
	send(29.6) // inside by less than the hysteresis: still firing
	send(29.5)
	next("resolved", 29.5)
	// A valid change applies: too-hot now fires above 40.
	edit("above: 30", "above: 40")
	hup("configuration reloaded")
	send(35)
	send(45)
	next("firing", 45)
	if b, _ := os.ReadFile(s.Proc(stack.Edge).Log); !strings.Contains(string(b), "reload refused, the running configuration stays") {
		t.Error("the refused reload does not say that the running configuration stays")
	}
}
