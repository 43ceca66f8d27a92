package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/tools/internal/stack"
	"github.com/updraft-io/updraft/tools/internal/verify"
)

func publisher(t *testing.T, url, id string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect publisher: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// TestEndToEnd publishes 20,000 readings from 50 devices over MQTT and reads
// the Parquet lake back: each reading is there exactly once, value intact.
func TestEndToEnd(t *testing.T) {
	s := newStack(t, nil)
	pub := publisher(t, s.MQTTURL(), "e2e-publisher")

	const devices, messages = 50, 100
	metrics := []struct{ name, unit string }{{"temperature", "Cel"}, {"humidity", "%RH"}, {"pressure", "hPa"}, {"voltage", ""}}
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[verify.Key]float64{}
	units := map[string]string{}
	base := time.Now().Add(-time.Minute).UnixMilli()
	var toks []mqtt.Token
	for m := range messages {
		for d := range devices {
			dev := fmt.Sprintf("dev-%05d", d+1)
			ts := base + int64(m)*10 + int64(d%7)
			var b strings.Builder
			fmt.Fprintf(&b, `{"ts":%d`, ts)
			for _, met := range metrics {
				// Values with full float64 precision, negative and tiny ones:
				// the lake must return exactly what was published.
				v := (rng.Float64() - 0.3) * math.Pow(10, float64(rng.IntN(12)-6))
				fmt.Fprintf(&b, `,%q:%s`, met.name, jsonFloat(v))
				want[verify.Key{Edge: "edge-1", Device: dev, Metric: met.name, TS: ts * 1e6}] = v
				units[met.name] = met.unit
			}
			b.WriteString("}")
			toks = append(toks, pub.Publish("devices/"+dev+"/telemetry", 1, false, b.String()))
		}
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	if len(want) != 20000 {
		t.Fatalf("built %d readings, want 20000", len(want))
	}
	ctx := context.Background()
	waitFor(t, 90*time.Second, "all readings in the lake", func() (bool, string) {
		snap := s.Snapshot(ctx)
		return snap.InLake >= 20000 && snap.Buffered == 0, snap.Line()
	})
	rows, files, err := verify.ReadLake(s.LakeDir(), "raw")
	if err != nil {
		t.Fatal(err)
	}
	rep := verify.Exact(rows, want)
	rep.Files = files
	t.Logf("%s", rep)
	if !rep.OK() {
		t.Fatalf("lake does not hold every reading exactly once: %s\n%s", rep, strings.Join(rep.Examples, "\n"))
	}
	for _, r := range rows {
		got := ""
		if r.Unit != nil {
			got = *r.Unit
		}
		if got != units[r.Metric] || r.Region != "local" || r.Site != "lab" || r.Edge != "edge-1" {
			t.Fatalf("row %+v: unit %q region %q site %q, want unit %q in local/lab/edge-1", r.Key(), got, r.Region, r.Site, units[r.Metric])
		}
	}
	if files == 0 {
		t.Fatal("no Parquet files")
	}

	// The first query endpoint answers from the lake.
	var q struct {
		Points []struct {
			Value float64 `json:"value"`
		} `json:"points"`
	}
	from := time.UnixMilli(base - 1000).UTC().Format(time.RFC3339Nano)
	to := time.UnixMilli(base + 100000).UTC().Format(time.RFC3339Nano)
	url := s.URL(stack.Cloud) + "/api/v1/query?device=dev-00007&metric=humidity&from=" + from + "&to=" + to
	if err := stack.GetJSON(context.Background(), url, &q); err != nil {
		t.Fatal(err)
	}
	if len(q.Points) != messages {
		t.Fatalf("query returned %d points for dev-00007 humidity, want %d", len(q.Points), messages)
	}
}

// jsonFloat renders v so that parsing it gives v back exactly.
func jsonFloat(v float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestBadInput: malformed payloads are dead-lettered with a reason and
// counted, and never stop the agent.
func TestBadInput(t *testing.T) {
	s := newStack(t, nil)
	pub := publisher(t, s.MQTTURL(), "e2e-bad")
	future := time.Now().Add(24 * time.Hour).UnixMilli()
	cases := []struct{ payload, reason string }{
		{`{"temperature": 21.5`, "malformed_json"},
		{`{"temperature": "warm"}`, "non_numeric"},
		{`{"temperature": 1e999}`, "non_finite"},
		{`{"temperature": NaN}`, "malformed_json"},
		{`{"ts": ` + fmt.Sprint(future) + `, "temperature": 20}`, "future_timestamp"},
		{`[1,2,3]`, "not_an_object"},
		{`{"x":"` + strings.Repeat("a", 300<<10) + `"}`, "oversized"},
	}
	for _, c := range cases {
		if tok := pub.Publish("devices/bad-1/telemetry", 1, false, c.payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	good := fmt.Sprintf(`{"ts":%d,"temperature":19.5}`, time.Now().UnixMilli())
	if tok := pub.Publish("devices/good-1/telemetry", 1, false, good); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	nc, err := nats.Connect(s.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reasons := map[string]int{}
	waitFor(t, 60*time.Second, "dead letters in the DEADLETTER stream", func() (bool, string) {
		st, err := js.Stream(ctx, "DEADLETTER")
		if err != nil {
			return false, err.Error()
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs >= uint64(len(cases)), fmt.Sprintf("%d dead letters", info.State.Msgs)
	})
	cons, err := js.OrderedConsumer(ctx, "DEADLETTER", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for range cases {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Topic, Reason string
		}
		if err := json.Unmarshal(m.Data(), &body); err != nil {
			t.Fatal(err)
		}
		if m.Subject() != "deadletter.local.lab.edge-1" || body.Topic != "devices/bad-1/telemetry" || m.Headers().Get("Updraft-Reason") != body.Reason {
			t.Fatalf("dead letter on %s: %+v headers %v", m.Subject(), body, m.Headers())
		}
		reasons[body.Reason]++
	}
	for _, c := range cases {
		if reasons[c.reason] == 0 {
			t.Errorf("no dead letter with reason %s (got %v)", c.reason, reasons)
		}
	}
	// Counted by reason in the agent's metrics.
	out, err := stack.Get(context.Background(), s.URL(stack.Edge)+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if !bytes.Contains(out, []byte(`reason="`+c.reason+`"`)) {
			t.Errorf("metrics have no rejected count for reason %s", c.reason)
		}
	}
	// The agent kept going: the good reading reaches the lake.
	waitFor(t, 60*time.Second, "the good reading in the lake", func() (bool, string) {
		snap := s.Snapshot(ctx)
		return snap.InLake >= 1, snap.Line()
	})
	rows, _, err := verify.ReadLake(s.LakeDir(), "raw")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Device != "good-1" || rows[0].Value != 19.5 {
		t.Fatalf("lake rows %+v, want only good-1 temperature 19.5", rows)
	}
}

// TestBadConfig: every binary rejects an invalid setting, naming the key and
// what is allowed, with exit code 2.
func TestBadConfig(t *testing.T) {
	cases := []struct {
		bin  string
		args []string
		key  string
	}{
		{"updraft-edge", []string{"--edge", "bad.edge"}, "edge"},
		{"updraft-edge", []string{"--nats-url", "http://x"}, "nats.url"},
		{"updraft-gateway", []string{"--region", "eu west"}, "region"},
		{"updraft-cloud", []string{"--region", "a*b"}, "region"},
		{"updraft-sim", []string{"--qos", "2"}, "qos"},
	}
	for _, c := range cases {
		t.Run(c.bin+" "+c.key, func(t *testing.T) {
			cmd := exec.Command(binDir+"/"+c.bin, append(c.args, "--check-config")...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want code 2; stderr: %s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.key) || !strings.Contains(stderr.String(), "allowed") {
				t.Fatalf("stderr does not name key %q and what is allowed: %s", c.key, stderr.String())
			}
		})
	}
	// A config file with an unknown key is rejected too.
	cmd := exec.Command(binDir+"/updraft-edge", "--config", "/dev/stdin", "--check-config")
	cmd.Stdin = strings.NewReader("buffer:\n  max_byts: 1GiB\n")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "max_byts") {
		t.Fatalf("unknown key accepted or not named: %v %s", err, out)
	}
	// So is a value out of range in a file.
	cmd = exec.Command(binDir+"/updraft-edge", "--config", "/dev/stdin", "--check-config")
	cmd.Stdin = strings.NewReader("gc_percent: 5\n")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "gc_percent") || !strings.Contains(string(out), "allowed") {
		t.Fatalf("gc_percent 5 accepted or not explained: %v %s", err, out)
	}
}

// TestDemo runs the local-stack demo flow (what `go tool task demo` does) for
// a few seconds and requires its verification to pass.
func TestDemo(t *testing.T) {
	ports, err := stack.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	opts := stack.Options{Root: t.TempDir(), Bin: binDir, ConfigDir: repoRoot() + "/deploy/local", Ports: ports,
		Args: map[string][]string{stack.Sim: {"--rate", "500"}, stack.Cloud: {"--roll-interval", "500ms"}}}
	var out bytes.Buffer
	res, err := stack.Demo(context.Background(), opts, 4*time.Second, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Published < 1000 || !res.OK() {
		t.Fatalf("demo: %s", res.Report)
	}
}
