package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"

	"github.com/updraft-io/updraft/schemas/batch"
	"github.com/updraft-io/updraft/tools/internal/netproxy"
	"github.com/updraft-io/updraft/tools/internal/stack"
	"github.com/updraft-io/updraft/tools/internal/verify"
)

// sfMosquitto starts an external Mosquitto broker with persistence, or skips
// (fails with UPDRAFT_REQUIRE_EXTERNAL=1) when it is not installed.
func sfMosquitto(t testing.TB, extra string) *stack.Mosquitto {
	t.Helper()
	m, err := stack.StartMosquitto(t.TempDir(), extra)
	if errors.Is(err, stack.ErrNoMosquitto) {
		missingExternal(t, "mosquitto", "mosquitto", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Error(err)
		}
	})
	return m
}

// sfOptions shape a stack for the store-and-forward proofs.
type sfOptions struct {
	mqttURL  string                   // external broker; "" = the agent's embedded one
	proxy    bool                     // put a netproxy between the agent and NATS
	editEdge func(yaml string) string // changes to deploy/local/edge.yaml
	noCloud  bool                     // gateway and edge only
	edgeEnv  []string                 // extra environment of the agent, e.g. GOMAXPROCS=1
}

// sfStack starts gateway, cloud and edge like newStack, with the options.
func sfStack(t testing.TB, o sfOptions) (*stack.Stack, *netproxy.Proxy) {
	t.Helper()
	ports, err := stack.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := t.TempDir()
	for _, f := range []string{"gateway.yaml", "cloud.yaml", "edge.yaml", "sim.yaml"} {
		b, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "local", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "edge.yaml" && o.editEdge != nil {
			b = []byte(o.editEdge(string(b)))
		}
		if err := os.WriteFile(filepath.Join(cfgDir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := map[string][]string{stack.Cloud: {"--roll-interval", "500ms"}}
	if o.mqttURL != "" {
		args[stack.Edge] = append(args[stack.Edge], "--embedded-broker=false", "--mqtt-broker", o.mqttURL)
	}
	var proxy *netproxy.Proxy
	if o.proxy {
		if proxy, err = netproxy.New("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", ports.NATS)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		args[stack.Edge] = append(args[stack.Edge], "--nats-url", "nats://"+proxy.Addr())
	}
	s := stack.New(stack.Options{Root: t.TempDir(), Bin: binDir, ConfigDir: cfgDir, Ports: ports, Args: args})
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			for _, n := range []string{stack.Gateway, stack.Cloud, stack.Edge} {
				if p := s.Proc(n); p != nil {
					t.Logf("--- %s log (tail) ---\n%s", n, stack.Tail(p.Log, 40))
				}
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names := []string{stack.Gateway, stack.Cloud, stack.Edge}
	if o.noCloud {
		names = []string{stack.Gateway, stack.Edge}
	}
	for _, n := range names {
		if n == stack.Edge {
			for _, kv := range o.edgeEnv {
				k, v, _ := strings.Cut(kv, "=")
				old, had := os.LookupEnv(k)
				os.Setenv(k, v)
				defer func() {
					if had {
						os.Setenv(k, old)
					} else {
						os.Unsetenv(k)
					}
				}()
			}
		}
		if _, err := s.Start(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	return s, proxy
}

// sfWorkload publishes messages of four readings each at QoS 1 and records
// which ones the broker acknowledged.
type sfWorkload struct {
	mu    sync.Mutex
	acked map[verify.Key]float64 // readings of acknowledged messages
	sent  map[verify.Key]float64 // readings of every message published
	// resent are the readings of messages still unacknowledged when the
	// publisher lost its connection: its persistent session sends them again
	// after reconnecting, and MQTT QoS 1 lets a broker store such a resend
	// as a second message. Duplicates of these come from the device's hop,
	// before the broker acknowledged anything, and are counted apart.
	resent map[verify.Key]bool
	nAck   int
}

var sfMetrics = []string{"temperature", "humidity", "pressure", "voltage"}

// sfPublish sends n messages at about rate per second from one paho client
// with a persistent session (so in-flight messages survive a broker restart),
// and returns when every publish has completed or failed.
func sfPublish(t *testing.T, url string, n, rate int, stop <-chan struct{}) *sfWorkload {
	t.Helper()
	// Reconnects are done here with Connect, not by paho's automatic
	// reconnect, whose goroutines race (seen under -race in paho v1.5.1).
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("sf-pub-%d", rand.Int())).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect publisher: %v", tok.Error())
	}
	defer c.Disconnect(250)
	w := &sfWorkload{acked: map[verify.Key]float64{}, sent: map[verify.Key]float64{}, resent: map[verify.Key]bool{}}
	rng := rand.New(rand.NewPCG(uint64(n), uint64(rate)))
	base := time.Now().Add(-2 * time.Minute).UnixMilli()
	type pending struct {
		tok  mqtt.Token
		keys map[verify.Key]float64
	}
	var toks []pending
	start := time.Now()
	for i := range n {
		if i%50 == 0 {
			// Pace: message i is due at i/rate seconds after the start.
			due := start.Add(time.Duration(float64(i) / float64(rate) * float64(time.Second)))
			select {
			case <-time.After(time.Until(due)):
			case <-stop:
				n = i
			}
			if n == i {
				break
			}
		}
		if !c.IsConnectionOpen() {
			for _, p := range toks {
				select {
				case <-p.tok.Done():
				default:
					for k := range p.keys {
						w.resent[k] = true
					}
				}
			}
		}
		if !sfReconnect(c, 30*time.Second) {
			t.Errorf("publisher could not reconnect within 30s")
			break
		}
		dev := fmt.Sprintf("dev-%05d", i%50+1)
		ts := base + int64(i/50)
		var b strings.Builder
		fmt.Fprintf(&b, `{"ts":%d`, ts)
		keys := make(map[verify.Key]float64, len(sfMetrics))
		for _, m := range sfMetrics {
			v := (rng.Float64() - 0.3) * float64(rng.IntN(100000))
			fmt.Fprintf(&b, `,%q:%s`, m, jsonFloat(v))
			k := verify.Key{Edge: "edge-1", Device: dev, Metric: m, TS: ts * 1e6}
			keys[k] = v
			w.sent[k] = v
		}
		b.WriteString("}")
		toks = append(toks, pending{c.Publish("devices/"+dev+"/telemetry", 1, false, b.String()), keys})
	}
	for _, p := range toks {
		if !p.tok.WaitTimeout(60*time.Second) || p.tok.Error() != nil {
			continue
		}
		w.nAck++
		for k, v := range p.keys {
			w.acked[k] = v
		}
	}
	return w
}

// sfReconnect connects c again if its connection was lost, retrying until
// the deadline: right after a loss paho may still be tearing down and refuse.
func sfReconnect(c mqtt.Client, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !c.IsConnectionOpen() {
		if tok := c.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond) // a retry interval, not a wait for a condition
	}
	return true
}

// sfCheckLake: every acknowledged reading is in the lake exactly once with
// its value; nothing else is there except readings of messages whose
// acknowledgement was lost (published, so possibly delivered).
func sfCheckLake(t *testing.T, s *stack.Stack, w *sfWorkload) {
	t.Helper()
	rows, files, err := verify.ReadLake(s.LakeDir(), "raw")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[verify.Key]int{}
	for _, r := range rows {
		k := r.Key()
		seen[k]++
		if seen[k] == 2 {
			if w.resent[k] {
				t.Logf("lake: %+v twice; the publisher resent it across a broker restart", k)
			} else {
				t.Errorf("duplicate in the lake: %+v", k)
			}
		}
		if v, ok := w.sent[k]; !ok || v != r.Value {
			t.Errorf("lake row %+v = %v was not published so (published %v, %v)", k, r.Value, v, ok)
		}
	}
	missing := 0
	for k := range w.acked {
		if seen[k] == 0 {
			if missing++; missing < 20 {
				t.Errorf("acknowledged reading missing from the lake: %+v", k)
			}
		}
	}
	t.Logf("lake: %d rows in %d files; %d acknowledged readings, %d missing", len(rows), files, len(w.acked), missing)
	if t.Failed() {
		t.FailNow()
	}
}

// sfCheckStream: the TELEMETRY stream holds every acknowledged reading
// exactly once.
func sfCheckStream(t *testing.T, s *stack.Stack, w *sfWorkload) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := stack.ReadStream(ctx, s.NATSURL(), "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[verify.Key]int{}
	dups, deviceDups := 0, 0
	for _, b := range st.Decoded {
		for _, r := range b.Readings {
			k := verify.Key{Edge: r.Edge, Device: r.Device, Metric: r.Metric, TS: r.TS}
			if seen[k]++; seen[k] == 2 {
				if w.resent[k] {
					deviceDups++
				} else {
					dups++
				}
			}
		}
	}
	if deviceDups > 0 {
		t.Logf("stream: %d readings twice because the publisher resent them across a broker restart (QoS 1 at the device's hop)", deviceDups)
	}
	missing := 0
	for k := range w.acked {
		if seen[k] == 0 {
			missing++
		}
	}
	t.Logf("stream: %d batches (%d replayed), %d bytes, %d distinct readings, %d duplicated, %d acknowledged missing",
		st.Batches, st.ReplayBatches, st.Bytes, len(seen), dups, missing)
	if dups != 0 || missing != 0 {
		t.Fatalf("stream: %d readings duplicated, %d acknowledged readings missing", dups, missing)
	}
}

// sfDrained waits until the lake holds at least want readings and the
// agent's buffer is empty.
func sfDrained(t *testing.T, s *stack.Stack, want int, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, d, "the buffer drained into the lake", func() (bool, string) {
		snap := s.Snapshot(ctx)
		return snap.InLake >= float64(want) && snap.Buffered == 0 && len(snap.Unreachable) == 0, snap.Line()
	})
}

// TestStoreForwardCrashLoop: the agent behind Mosquitto is killed with
// SIGKILL at ten random moments while a publisher sends 100,000 readings at
// QoS 1; after the drain every reading the broker acknowledged is in the
// stream and in the lake exactly once, values intact.
func TestStoreForwardCrashLoop(t *testing.T) {
	mq := sfMosquitto(t, "")
	s, _ := sfStack(t, sfOptions{mqttURL: mq.URL()})
	const messages, rate, kills = 25_000, 1_250, 10 // 4 readings a message
	var w *sfWorkload
	done := make(chan struct{})
	go func() { defer close(done); w = sfPublish(t, mq.URL(), messages, rate, nil) }()

	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var restarts []time.Duration
	for range kills {
		// A random moment: 0.3 to 2 seconds after the agent became ready.
		<-time.After(time.Duration(300+rng.IntN(1700)) * time.Millisecond)
		s.Kill(stack.Edge)
		start := time.Now()
		if _, err := s.Start(ctx, stack.Edge); err != nil {
			t.Fatal(err)
		}
		restarts = append(restarts, time.Since(start).Round(time.Millisecond))
	}
	<-done
	t.Logf("killed and restarted the agent %d times (restart to ready: %v); broker acknowledged %d of %d messages",
		kills, restarts, w.nAck, messages)
	if w.nAck != messages {
		t.Fatalf("the broker acknowledged %d of %d messages", w.nAck, messages)
	}
	sfDrained(t, s, len(w.acked), 2*time.Minute)
	sfCheckStream(t, s, w)
	sfCheckLake(t, s, w)
}

// TestStoreForwardBrokerRestart: Mosquitto is restarted (with persistence)
// while the agent is connected and devices publish; nothing the broker
// acknowledged is lost.
func TestStoreForwardBrokerRestart(t *testing.T) {
	mq := sfMosquitto(t, "")
	s, _ := sfStack(t, sfOptions{mqttURL: mq.URL()})
	var w *sfWorkload
	done := make(chan struct{})
	go func() { defer close(done); w = sfPublish(t, mq.URL(), 8_000, 1_000, nil) }()
	for range 2 {
		<-time.After(2500 * time.Millisecond)
		if err := mq.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	t.Logf("broker restarted twice; it acknowledged %d of 8000 messages", w.nAck)
	defer func() {
		if t.Failed() {
			out, _ := stack.Get(context.Background(), s.URL(stack.Edge)+"/api/v1/status")
			t.Logf("edge status: %s\nmosquitto log:\n%s", out, stack.Tail(filepath.Join(mq.Dir, "mosquitto.log"), 60))
		}
	}()
	if w.nAck < 4000 {
		t.Fatalf("only %d messages acknowledged: the publisher did not recover", w.nAck)
	}
	sfDrained(t, s, len(w.acked), 90*time.Second)
	sfCheckStream(t, s, w)
	sfCheckLake(t, s, w)
}

// sfArrival is a batch seen on the gateway.
type sfArrival struct {
	at     time.Time
	replay bool
	n      int
}

// TestStoreForwardUplinkOutage: the link between the agent and NATS is cut
// for 30 seconds, then flaps (cut for a second, repeatedly), while devices
// keep publishing. The backlog metric rises and drains, live readings reach
// the stream during the drain, and the lake holds every reading exactly once.
func TestStoreForwardUplinkOutage(t *testing.T) {
	const capBytes = 48 << 10
	s, proxy := sfStack(t, sfOptions{proxy: true, editEdge: func(y string) string {
		return strings.Replace(y, "  retry_max: 10s\n",
			fmt.Sprintf("  retry_max: 2s\n  max_bytes_per_second: %d\n  backlog_share: 0.5\n", capBytes), 1)
	}})
	// Watch the gateway directly, not through the proxy.
	nc, err := nats.Connect(s.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var arrivals []sfArrival
	sub, err := nc.Subscribe("telemetry.>", func(m *nats.Msg) {
		b, err := batch.Decode(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Errorf("decode: %v", err)
			return
		}
		mu.Lock()
		arrivals = append(arrivals, sfArrival{at: time.Now(), replay: b.Replay, n: len(b.Readings)})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	// The backlog metric, sampled from the agent's status API.
	type sample struct {
		at       time.Time
		buffered float64
		age      float64
	}
	var samples []sample
	pollStop := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			var st struct {
				Buffer struct {
					Buffered float64 `json:"buffered_readings"`
					Age      float64 `json:"oldest_unsent_age_seconds"`
				} `json:"buffer"`
			}
			if err := stack.GetJSON(context.Background(), s.URL(stack.Edge)+"/api/v1/status", &st); err == nil {
				mu.Lock()
				samples = append(samples, sample{time.Now(), st.Buffer.Buffered, st.Buffer.Age})
				mu.Unlock()
			}
			select {
			case <-pollStop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()

	stopPub := make(chan struct{})
	var w *sfWorkload
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); w = sfPublish(t, s.MQTTURL(), 1_000_000, 300, stopPub) }()

	<-time.After(2 * time.Second)
	cutAt := time.Now()
	proxy.Cut()
	<-time.After(30 * time.Second)
	proxy.Restore()
	restoredAt := time.Now()
	// Let the backlog drain, then flap.
	waitFor(t, 60*time.Second, "the backlog drained after the outage", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		if len(samples) == 0 {
			return false, "no samples"
		}
		last := samples[len(samples)-1]
		return last.at.After(restoredAt) && last.buffered < 3000, fmt.Sprintf("%+v", last)
	})
	drainedAt := time.Now()
	for range 6 {
		proxy.Cut()
		<-time.After(time.Second)
		proxy.Restore()
		<-time.After(time.Second)
	}
	<-time.After(2 * time.Second)
	close(stopPub)
	<-pubDone
	sfDrained(t, s, len(w.acked), 90*time.Second)
	close(pollStop)
	<-pollDone

	mu.Lock()
	var peak, peakAge float64
	for _, sm := range samples {
		if sm.at.After(cutAt) && sm.at.Before(restoredAt.Add(time.Second)) {
			peak, peakAge = max(peak, sm.buffered), max(peakAge, sm.age)
		}
	}
	// The drain starts when the link carries data again: the agent first
	// has to notice the restored link and reconnect (1 to 3 s, nats.go's
	// reconnect wait and jitter), and nothing flows meanwhile. It ends at
	// the sample that saw the backlog gone.
	resumedAt := drainedAt
	for _, a := range arrivals {
		if a.at.After(restoredAt) && a.at.Before(resumedAt) {
			resumedAt = a.at
		}
	}
	var liveDuringDrain, liveReadings, replayBatches int
	for _, a := range arrivals {
		if a.replay {
			replayBatches++
		}
		if !a.replay && a.at.After(resumedAt) && !a.at.After(drainedAt) {
			liveDuringDrain++
			liveReadings += a.n
		}
	}
	mu.Unlock()
	drain := drainedAt.Sub(resumedAt)
	t.Logf("outage 30s: backlog peaked at %.0f readings, oldest unsent %.1fs; data flowed again %v after the link came back "+
		"and the backlog drained %v later; %d live batches (%d readings) arrived during the drain; %d replayed batches; %d messages acknowledged",
		peak, peakAge, resumedAt.Sub(restoredAt).Round(100*time.Millisecond), drain.Round(100*time.Millisecond),
		liveDuringDrain, liveReadings, replayBatches, w.nAck)
	if peak < 25*300*4 || peakAge < 25 {
		t.Errorf("the backlog metric did not rise through the outage: peak %.0f readings, oldest %.1fs", peak, peakAge)
	}
	if drain > 2*time.Second && liveDuringDrain == 0 {
		t.Errorf("no live batch reached the stream during the %v drain", drain)
	}
	if replayBatches == 0 {
		t.Errorf("no batch carried the replay header")
	}
	sfCheckLake(t, s, w)
}
