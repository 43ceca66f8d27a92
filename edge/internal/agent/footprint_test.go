package agent

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

var (
	footprintBacklog config.ByteSize = 1 << 30
	footprintPhase                   = flag.Duration("footprint.phase", 60*time.Second, "BenchmarkBacklogFootprint: length of the outage and of the drain phase")
	footprintRate                    = flag.Float64("footprint.rate", 10000, "BenchmarkBacklogFootprint: MQTT messages/s (3 readings each)")
	footprintConfig                  = flag.String("footprint.config", "", "BenchmarkBacklogFootprint: YAML appended to the agent's configuration, e.g. 'memory_limit: 40MiB'")
	footprintSeed                    = flag.String("footprint.seed", "", "BenchmarkBacklogFootprint: keep the prefilled buffer in this directory and reuse it on later runs")
)

func init() {
	flag.Var(&footprintBacklog, "footprint.backlog", "BenchmarkBacklogFootprint: encoded bytes buffered before the agent starts")
}

// BenchmarkBacklogFootprint measures the resident memory of the edge agent,
// a separate process as deployed, with a large backlog:
//
//  1. The buffer directory is filled with footprint.backlog (1 GiB) of
//     readings that were never forwarded (the uplink has been down).
//  2. Outage: the agent starts on that directory with its NATS server still
//     down, and updraft-sim publishes footprint.rate (10,000) messages/s to
//     Mosquitto for footprint.phase.
//  3. Drain: a JetStream server comes up at the agent's NATS URL; the load
//     goes on for another footprint.phase while the backlog drains.
//
// /proc/<pid>/status is sampled every 100 ms. Reported: the median and peak
// VmRSS of each phase (outage-median-rss-MiB, outage-peak-rss-MiB, ...) and
// the peaks of its anonymous and file-backed parts, the agent's lifetime VmHWM, the
// messages/s it acknowledged in each phase, and the readings/s forwarded
// during the drain. Needs mosquitto on PATH.
//
//	go test ./edge/internal/agent -run XXX -bench BacklogFootprint -benchtime 1x -timeout 30m
func BenchmarkBacklogFootprint(b *testing.B) {
	mosq, err := exec.LookPath("mosquitto")
	if err != nil {
		if os.Getenv("UPDRAFT_REQUIRE_EXTERNAL") == "1" {
			b.Fatal("mosquitto is not on PATH (Debian package mosquitto) and UPDRAFT_REQUIRE_EXTERNAL=1")
		}
		b.Skip("mosquitto is not on PATH (Debian package mosquitto): install it to run this benchmark")
	}
	for b.Loop() {
		runFootprint(b, mosq)
	}
}

func runFootprint(b *testing.B, mosq string) {
	dir := b.TempDir()
	bin := buildBinaries(b, dir, "./edge/cmd/updraft-edge", "./tools/cmd/updraft-sim")
	edge := schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}

	bufDir := filepath.Join(dir, "buffer")
	t0 := time.Now()
	if seed := *footprintSeed; seed != "" {
		if _, err := os.Stat(seed); err != nil {
			readings := prefill(b, seed, edge, int64(footprintBacklog))
			b.Logf("prefilled %s with %d readings in %v", footprintBacklog, readings, time.Since(t0).Round(time.Second))
		}
		if out, err := exec.Command("cp", "-a", seed, bufDir).CombinedOutput(); err != nil {
			b.Fatalf("copy %s: %v\n%s", seed, err, out)
		}
	} else {
		readings := prefill(b, bufDir, edge, int64(footprintBacklog))
		b.Logf("prefilled %s with %d readings in %v", footprintBacklog, readings, time.Since(t0).Round(time.Second))
	}
	t0 = time.Now()

	mqttAddr, natsAddr, httpAddr := freeAddr(b), freeAddr(b), freeAddr(b)
	startMosquitto(b, mosq, dir, mqttAddr)
	natsHost, natsPortS, _ := strings.Cut(natsAddr, ":")
	natsPort, _ := strconv.Atoi(natsPortS)
	cfgPath := filepath.Join(dir, "edge.yaml")
	cfgText := fmt.Sprintf(`region: local
site: lab
edge: edge-1
mqtt: {broker: "tcp://%s"}
buffer: {dir: %q, max_bytes: 8GiB}
nats: {url: "nats://%s"}
http: {addr: %q}
`, mqttAddr, bufDir, natsAddr, httpAddr) + *footprintConfig + "\n"
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		b.Fatal(err)
	}
	agent := exec.Command(bin["updraft-edge"], "--config", cfgPath, "--log-level", "warn")
	agent.Stdout, agent.Stderr = os.Stderr, os.Stderr
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = agent.Process.Kill(); _ = agent.Wait() }()
	pid := agent.Process.Pid
	status := func() agentStatus { return readStatus(b, httpAddr) }
	for deadline := time.Now().Add(60 * time.Second); !status().MQTT.Connected; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("agent not connected to mosquitto after 60 s")
		}
	}
	startup := status()
	startHWM := procStatus(b, pid)["VmHWM"]
	b.Logf("agent ready in %v with %d buffered readings", time.Since(t0).Round(time.Millisecond), startup.Buffer.BufferedReadings)

	sim := exec.Command(bin["updraft-sim"], "--broker", "tcp://"+mqttAddr, "--rate", strconv.FormatFloat(*footprintRate, 'f', -1, 64),
		"--devices", "50", "--duration", (2 * *footprintPhase).String(), "--log-level", "warn")
	sim.Stdout, sim.Stderr = os.Stderr, os.Stderr
	if err := sim.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sim.Process.Kill(); _ = sim.Wait() }()

	outage := sampleRSS(b, pid, *footprintPhase)
	mid := status()
	outageHWM := procStatus(b, pid)["VmHWM"]

	ns, err := server.NewServer(&server.Options{Host: natsHost, Port: natsPort, JetStream: true, StoreDir: filepath.Join(dir, "js"),
		JetStreamMaxStore: 64 << 30, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>", "events.>", "deadletter.>"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		b.Fatal(err)
	}
	drain := sampleRSS(b, pid, *footprintPhase)
	end := status()
	hwm := procStatus(b, pid)["VmHWM"]

	phase := footprintPhase.Seconds()
	b.ReportMetric(outage.medianRSS/1024, "outage-median-rss-MiB")
	b.ReportMetric(drain.medianRSS/1024, "drain-median-rss-MiB")
	b.ReportMetric(outage.peakRSS/1024, "outage-peak-rss-MiB")
	b.ReportMetric(outage.peakAnon/1024, "outage-peak-anon-MiB")
	b.ReportMetric(outage.peakFile/1024, "outage-peak-file-MiB")
	b.ReportMetric(drain.peakRSS/1024, "drain-peak-rss-MiB")
	b.ReportMetric(drain.peakAnon/1024, "drain-peak-anon-MiB")
	b.ReportMetric(drain.peakFile/1024, "drain-peak-file-MiB")
	b.ReportMetric(hwm/1024, "hwm-MiB")
	// The whole run's peak as it stood once the agent was ready and at the
	// end of the outage phase: which phase set it.
	b.ReportMetric(startHWM/1024, "hwm-at-ready-MiB")
	b.ReportMetric(outageHWM/1024, "hwm-after-outage-MiB")
	b.ReportMetric(float64(mid.MQTT.MessagesAcked-startup.MQTT.MessagesAcked)/phase, "outage-msgs/s")
	b.ReportMetric(float64(end.MQTT.MessagesAcked-mid.MQTT.MessagesAcked)/phase, "drain-msgs/s")
	b.ReportMetric(float64(end.Forward.ReadingsSent-mid.Forward.ReadingsSent)/phase, "readings/s")
	b.ReportMetric(float64(startup.Buffer.BufferedReadings), "backlog-readings")
	b.ReportMetric(float64(end.Buffer.BufferedReadings), "left-readings")
}

// agentStatus is the part of GET /api/v1/status the benchmark reads.
type agentStatus struct {
	MQTT struct {
		Connected     bool  `json:"connected"`
		MessagesAcked int64 `json:"messages_acked"`
	} `json:"mqtt"`
	Buffer struct {
		BufferedReadings int64 `json:"buffered_readings"`
	} `json:"buffer"`
	Forward struct {
		ReadingsSent int64 `json:"readings_sent"`
	} `json:"forward"`
}

func readStatus(b *testing.B, addr string) agentStatus {
	var st agentStatus
	resp, err := http.Get("http://" + addr + "/api/v1/status")
	if err != nil {
		return st
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		b.Fatalf("status: %v", err)
	}
	return st
}

// prefill appends readings to a new buffer in dir until it holds target
// encoded bytes, and closes it. Values are random, as real sensor noise is,
// so they take their full encoded size.
func prefill(b *testing.B, dir string, edge schemas.EdgeID, target int64) int64 {
	cfg := buffer.DefaultConfig()
	cfg.Dir, cfg.MaxBytes = dir, config.ByteSize(8*target)
	buf, err := buffer.Open(cfg, edge, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- buf.Run(ctx) }()
	rng := rand.New(rand.NewPCG(1, 2))
	metrics := []string{"temperature", "humidity", "pressure"}
	ts := time.Now().Add(-24 * time.Hour).UnixNano()
	var n int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for buf.Stats().BufferedBytes < target && failed.Load() == nil {
		rs := make([]schemas.Reading, 10000)
		for i := range rs {
			ts += int64(time.Millisecond)
			rs[i] = schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge, Device: fmt.Sprintf("dev-%05d", 1+i%50), Metric: metrics[i%3], TS: ts, Value: 20 + rng.NormFloat64()}
		}
		wg.Add(1)
		buf.Append(schemas.KindRaw, rs, func(err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
			wg.Done()
		})
		n += int64(len(rs))
		if n%200_000 == 0 {
			wg.Wait()
		}
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("prefill: %v", *err)
	}
	stop()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if err := buf.Close(); err != nil {
		b.Fatal(err)
	}
	return n
}

type rssPeaks struct{ peakRSS, peakAnon, peakFile, medianRSS float64 } // KiB

// sampleRSS samples /proc/<pid>/status every 100 ms for d, and logs the
// largest file mappings at the peak of the file-backed part.
func sampleRSS(b *testing.B, pid int, d time.Duration) rssPeaks {
	var p rssPeaks
	var files string
	var all []float64
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st := procStatus(b, pid)
		all = append(all, st["VmRSS"])
		if st["RssFile"] > p.peakFile {
			files = topMappings(pid, 5)
		}
		p.peakRSS, p.peakAnon, p.peakFile = max(p.peakRSS, st["VmRSS"]), max(p.peakAnon, st["RssAnon"]), max(p.peakFile, st["RssFile"])
	}
	b.Logf("at the file-backed peak (%.0f KiB): %s", p.peakFile, files)
	slices.Sort(all)
	p.medianRSS = all[len(all)/2]
	return p
}

// topMappings lists the n file mappings of pid with the most resident KiB,
// and the total over files of the same kind (extension).
func topMappings(pid, n int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return err.Error()
	}
	byFile, byKind := map[string]float64{}, map[string]float64{}
	var name string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			name = ""
			if len(f) >= 6 {
				name = f[5]
			}
		case len(f) == 3 && f[0] == "Rss:" && name != "" && strings.HasPrefix(name, "/"):
			kb, _ := strconv.ParseFloat(f[1], 64)
			byFile[name] += kb
			byKind[filepath.Ext(name)] += kb
		}
	}
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range byFile {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Compare(b.v, a.v) })
	var out []string
	for _, e := range all[:min(n, len(all))] {
		out = append(out, fmt.Sprintf("%s %.0f KiB", filepath.Base(e.k), e.v))
	}
	for k, v := range byKind {
		out = append(out, fmt.Sprintf("all %q %.0f KiB", k, v))
	}
	return strings.Join(out, ", ")
}

// procStatus returns the kB fields of /proc/<pid>/status.
func procStatus(b *testing.B, pid int) map[string]float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("agent process: %v", err)
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		if n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// buildBinaries builds the given main packages of this module into dir.
func buildBinaries(b *testing.B, dir string, pkgs ...string) map[string]string {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		b.Fatalf("go list -m: %v", err)
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	bins := map[string]string{}
	for _, p := range pkgs {
		bins[filepath.Base(p)] = filepath.Join(dir, filepath.Base(p))
	}
	return bins
}

// startMosquitto runs mosquitto on addr with no per-client queue limit, so
// that what the agent does not take at once waits in the broker.
func startMosquitto(b *testing.B, bin, dir, addr string) {
	host, port, _ := strings.Cut(addr, ":")
	conf := filepath.Join(dir, "mosquitto.conf")
	text := fmt.Sprintf("listener %s %s\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence false\n", port, host)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := (&net.Dialer{}).Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatal("mosquitto did not start listening")
		}
	}
}
