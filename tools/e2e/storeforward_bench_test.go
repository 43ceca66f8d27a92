package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/updraft-io/updraft/tools/internal/stack"
)

// sfBenchPayloads are the messages of the ingest benchmark: four readings
// each from 50 devices, every device reporting every 100 ms.
//
// With smooth, the values follow slow sine waves, like the simulator's
// default indoor-climate workload: the local stack's rules (deploy/local/
// edge.yaml) stay quiet, as they would on a real site. Without it, every
// device's temperature steps by 10 degrees from one reading to the next, so
// that its rate rule raises or resolves an alert on every reading and its
// threshold rule every fourth: an alert storm, which the agent then
// publishes, logs and buffers as events next to the readings.
func sfBenchPayloads(n int, smooth bool) (topics, payloads []string) {
	const devices, every = 50, 100 // ms
	base := time.Now().Add(-time.Duration(n/devices*every)*time.Millisecond - time.Minute).UnixMilli()
	for i := range n {
		d, k := i%devices, i/devices
		topics = append(topics, fmt.Sprintf("devices/dev-%05d/telemetry", d+1))
		ts := base + int64(k*every)
		if !smooth {
			payloads = append(payloads, fmt.Sprintf(`{"ts":%d,"temperature":%d.5,"humidity":%d.25,"pressure":1013.%d,"voltage":3.%d}`,
				ts, i%40, i%90, i%10, i%9))
			continue
		}
		t := float64(k*every) / 1000 // seconds
		phase := float64(d) * 0.7
		payloads = append(payloads, fmt.Sprintf(`{"ts":%d,"temperature":%.2f,"humidity":%.1f,"pressure":%.1f,"voltage":%.3f}`,
			ts, 21+3*math.Sin(2*math.Pi*t/600+phase), 45+8*math.Sin(2*math.Pi*t/900+phase), 1013.2+1.5*math.Sin(2*math.Pi*t/1800+phase),
			3.3-0.0001*t))
	}
	return topics, payloads
}

// sfBenchPublish publishes every payload at QoS 1 from one paho client as
// fast as the broker acknowledges, and returns when all are acknowledged.
func sfBenchPublish(tb testing.TB, url string, topics, payloads []string) {
	tb.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("sf-bench-pub").SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		tb.Fatalf("connect publisher: %v", tok.Error())
	}
	defer c.Disconnect(100)
	toks := make([]mqtt.Token, len(payloads))
	for i := range payloads {
		toks[i] = c.Publish(topics[i], 1, false, payloads[i])
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(2*time.Minute) || tok.Error() != nil {
			tb.Fatalf("publish: %v", tok.Error())
		}
	}
}

// sfBenchCeiling: the same broker, publisher and payloads delivering at QoS 1
// to a paho subscriber that does nothing. Returns messages/s over the whole
// run and over its steady part (see steadyFrom).
func sfBenchCeiling(b *testing.B, mq *stack.Mosquitto, topics, payloads []string) (whole, steady float64) {
	var got atomic.Int64
	all := make(chan struct{})
	n := int64(len(payloads))
	lo, hi := int64(steadyFrom*float64(n)), int64(steadyTo*float64(n))
	var tLo, tHi atomic.Int64 // unix ns, set by the callbacks that count lo and hi
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(mq.URL()).SetClientID("sf-bench-sub").SetCleanSession(true).
		SetOrderMatters(false))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("connect subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("devices/+/telemetry", 1, func(mqtt.Client, mqtt.Message) {
		switch got.Add(1) {
		case lo:
			tLo.Store(time.Now().UnixNano())
		case hi:
			tHi.Store(time.Now().UnixNano())
		case n:
			close(all)
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("subscribe: %v", tok.Error())
	}
	start := time.Now()
	sfBenchPublish(b, mq.URL(), topics, payloads)
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		b.Fatalf("subscriber got %d of %d messages", got.Load(), n)
	}
	whole = float64(n) / time.Since(start).Seconds()
	// Callbacks run concurrently: the ones that counted lo and hi may still
	// be about to store their times.
	for tLo.Load() == 0 || tHi.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	return whole, float64(hi-lo) / time.Duration(tHi.Load()-tLo.Load()).Seconds()
}

// pooled is the rate of two equal runs together: their messages over their
// summed times.
func pooled(r1, r2 float64) float64 { return 2 / (1/r1 + 1/r2) }

// The steady rate of a run is measured from when steadyFrom of its messages
// have arrived to when steadyTo have: it leaves out the start (connections,
// the first batches) and the end (the last batch of the agent's run waits up
// to batch_max_age to be sealed; the ceiling has no such wait), which are
// not throughput.
const steadyFrom, steadyTo = 0.1, 0.9

// steadyRate is the rate of the samples (time, count) between the first
// that reaches steadyFrom of total and the first that reaches steadyTo.
func steadyRate(ts []time.Time, counts []float64, total float64) float64 {
	i, j := -1, -1
	for k, c := range counts {
		if i < 0 && c >= steadyFrom*total {
			i = k
		}
		if c >= steadyTo*total {
			j = k
			break
		}
	}
	if i < 0 || j <= i {
		return math.NaN()
	}
	return (counts[j] - counts[i]) / ts[j].Sub(ts[i]).Seconds()
}

// machineCPU is the busy and stolen CPU time of the whole machine so far.
func machineCPU(b *testing.B) (busy, steal time.Duration) {
	busy, steal, err := stack.MachineCPU()
	if err != nil {
		b.Fatal(err)
	}
	return busy, steal
}

// procCPU is the CPU time pid has used so far.
func procCPU(b *testing.B, pid int) time.Duration {
	d, err := stack.ProcCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkStoreForwardIngest measures durable ingest by the agent on one
// core (GOMAXPROCS=1) behind Mosquitto, into JetStream, against the ceiling
// of the same broker, publisher and payloads delivering to a subscriber that
// does nothing, measured before the agent's run and again after it; the
// ratio is to the two together, and to each. Also reported: the agent's
// peak RSS, bytes it wrote to disk per reading (write_bytes), encoded bytes
// on the wire per reading, the steady rates (steadyFrom), and the CPU time
// per message of each process and of the whole machine in the runs. On a machine with few cores the
// broker, the publisher and the agent share them, so the ratio follows the
// CPU per message: about (broker + publisher + subscriber) / (broker +
// publisher + agent + gateway), or the ratio of the machine's CPU per message.
//
//	go test -run '^$' -bench StoreForwardIngest -benchtime 1x ./tools/e2e/
func BenchmarkStoreForwardIngest(b *testing.B) {
	const messages = 200_000
	for _, c := range []struct {
		name     string
		inflight int
		smooth   bool
	}{
		{"max_inflight_messages=20", 20, true},
		{"max_inflight_messages=1000", 1000, true},
		{"alert_storm/max_inflight_messages=20", 20, false},
	} {
		inflight := c.inflight
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				mq := sfMosquitto(b, fmt.Sprintf("max_inflight_messages %d", inflight))
				topics, payloads := sfBenchPayloads(messages, c.smooth)
				// CPU per message of each process, in the ceiling run and in the
				// agent's: on a small machine they share its cores.
				self := os.Getpid()
				cs0, cm0 := procCPU(b, self), procCPU(b, mq.Pid())
				mb0, ms0 := machineCPU(b)
				before, beforeSteady := sfBenchCeiling(b, mq, topics, payloads)
				mb1, ms1 := machineCPU(b)
				cs1, cm1 := procCPU(b, self), procCPU(b, mq.Pid())

				s, _ := sfStack(b, sfOptions{mqttURL: mq.URL(), noCloud: true, edgeEnv: []string{"GOMAXPROCS=1"}})
				pid := s.Proc(stack.Edge).Cmd.Process.Pid
				gw := s.Proc(stack.Gateway).Cmd.Process.Pid
				w0, _ := stack.ProcWriteBytes(pid)
				a0, s0, m0, g0 := procCPU(b, pid), procCPU(b, self), procCPU(b, mq.Pid()), procCPU(b, gw)
				var peakRSS atomic.Int64
				stop := make(chan struct{})
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					for {
						if rss, err := stack.ProcRSS(pid); err == nil && rss > peakRSS.Load() {
							peakRSS.Store(rss)
						}
						select {
						case <-stop:
							return
						case <-time.After(100 * time.Millisecond):
						}
					}
				}()
				commits := func() float64 {
					var st struct {
						Buffer struct {
							Commits float64 `json:"commits"`
						} `json:"buffer"`
					}
					if err := getJSON(s.URL(stack.Edge)+"/api/v1/status", &st); err != nil {
						b.Fatal(err)
					}
					return st.Buffer.Commits
				}
				c0 := commits()
				mb2, ms2 := machineCPU(b)
				start := time.Now()
				b.ResetTimer()
				// Poll the raw readings the agent has forwarded (aggregates are
				// counted apart), from the start, every 50 ms: often enough to time
				// the steady part to within a percent, seldom enough to cost the
				// agent little (the ceiling run has no such load).
				var polls []time.Time
				var sents []float64 // messages: raw readings / 4
				polled := make(chan error, 1)
				go func() {
					deadline := time.Now().Add(2 * time.Minute)
					last := 0.0
					for {
						var st struct {
							Forward struct {
								Raw float64 `json:"raw_readings_sent"`
							} `json:"forward"`
						}
						if err := getJSON(s.URL(stack.Edge)+"/api/v1/status", &st); err == nil {
							last = st.Forward.Raw / 4
							polls, sents = append(polls, time.Now()), append(sents, last)
							if st.Forward.Raw >= 4*messages {
								polled <- nil
								return
							}
						}
						if time.Now().After(deadline) {
							polled <- fmt.Errorf("agent forwarded the raw readings of %.0f of %d messages in 2 minutes", last, messages)
							return
						}
						time.Sleep(50 * time.Millisecond)
					}
				}()
				sfBenchPublish(b, mq.URL(), topics, payloads)
				published := time.Since(start)
				if err := <-polled; err != nil {
					b.Fatal(err)
				}
				el := time.Since(start)
				mb3, ms3 := machineCPU(b)
				b.StopTimer()
				c1 := commits()
				alerts := 0.0
				if out, err := httpGet(s.URL(stack.Edge) + "/metrics"); err == nil {
					for _, line := range strings.Split(string(out), "\n") {
						if strings.HasPrefix(line, "updraft_edge_alerts_total{") {
							if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
								alerts += v
							}
						}
					}
				}
				close(stop)
				<-sampled
				w1, _ := stack.ProcWriteBytes(pid)
				a1, s1, m1, g1 := procCPU(b, pid), procCPU(b, self), procCPU(b, mq.Pid()), procCPU(b, gw)
				perMsg := func(d time.Duration) float64 { return float64(d.Microseconds()) / messages }
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				streamed, err := stack.ReadStream(ctx, s.NATSURL(), "TELEMETRY")
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				// The ceiling again, after the agent's run: on a shared machine it
				// moves from one measurement to the next (by a tenth and more), so
				// the ratio is taken to both together. A fresh broker of the same
				// configuration: the first one keeps the agent's persistent
				// session and would queue every message for it.
				if err := s.Stop(); err != nil {
					b.Fatal(err)
				}
				mq2 := sfMosquitto(b, fmt.Sprintf("max_inflight_messages %d", inflight))
				mb4, _ := machineCPU(b)
				after, afterSteady := sfBenchCeiling(b, mq2, topics, payloads)
				mb5, _ := machineCPU(b)
				ceiling, ceilingSteady := pooled(before, after), pooled(beforeSteady, afterSteady)
				rate := float64(messages) / el.Seconds()
				steady := steadyRate(polls, sents, messages)
				b.ReportMetric(rate, "msgs/s")
				b.ReportMetric(4*rate, "readings/s")
				b.ReportMetric(ceiling, "ceiling-msgs/s")
				b.ReportMetric(steady, "steady-msgs/s")
				b.ReportMetric(ceilingSteady, "ceiling-steady-msgs/s")
				b.ReportMetric(100*steady/ceilingSteady, "steady-%-of-ceiling")
				b.ReportMetric(float64(messages)/published.Seconds(), "published-msgs/s")
				b.ReportMetric(100*rate/ceiling, "%-of-ceiling")
				b.ReportMetric(before, "ceiling-before-msgs/s")
				b.ReportMetric(after, "ceiling-after-msgs/s")
				b.ReportMetric(float64(peakRSS.Load())/(1<<20), "peak-RSS-MiB")
				b.ReportMetric(messages/(c1-c0), "msgs/commit")
				b.ReportMetric(alerts/messages, "alerts/msg")
				b.ReportMetric(float64(w1-w0)/(4*messages), "disk-B/reading")
				b.ReportMetric(perMsg(a1-a0), "agent-CPU-µs/msg")
				b.ReportMetric(float64(streamed.Bytes)/(4*messages), "wire-B/reading")
				ceilingCPU := (mb1 - mb0 + mb5 - mb4) / 2
				b.ReportMetric(perMsg(ceilingCPU), "ceiling-machine-CPU-µs/msg")
				b.ReportMetric(perMsg(mb3-mb2), "machine-CPU-µs/msg")
				b.Logf("%s", strings.Join([]string{
					fmt.Sprintf("agent: %d messages (%d readings) into JetStream in %v", messages, 4*messages, el.Round(time.Millisecond)),
					fmt.Sprintf("ceiling %.0f msgs/s (before %.0f, after %.0f); ratio %.0f%% (to before %.0f%%, to after %.0f%%)",
						ceiling, before, after, 100*rate/ceiling, 100*rate/before, 100*rate/after),
					fmt.Sprintf("steady (%.0f-%.0f%% of the messages): %.0f msgs/s (%.0f readings/s), ceiling %.0f msgs/s; ratio %.0f%%",
						100*steadyFrom, 100*steadyTo, steady, 4*steady, ceilingSteady, 100*steady/ceilingSteady),
					fmt.Sprintf("machine CPU µs/msg (steal): ceiling runs %.1f (%.1f) and %.1f, agent run %.1f (%.1f), ratio %.0f%%",
						perMsg(mb1-mb0), perMsg(ms1-ms0), perMsg(mb5-mb4), perMsg(mb3-mb2), perMsg(ms3-ms2), 100*float64(ceilingCPU)/float64(mb3-mb2)),
					fmt.Sprintf("CPU µs/msg: ceiling run before: broker %.1f, publisher and subscriber %.1f; agent run: broker %.1f, publisher and status polls %.1f, agent %.1f, gateway %.1f",
						perMsg(cm1-cm0), perMsg(cs1-cs0), perMsg(m1-m0), perMsg(s1-s0), perMsg(a1-a0), perMsg(g1-g0)),
					fmt.Sprintf("%d batches on the wire", streamed.Batches)}, "; "))
			}
		})
	}
}
