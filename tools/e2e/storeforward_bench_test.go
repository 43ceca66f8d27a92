package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
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

// segment is one stretch of the ingest benchmark: n messages published,
// whole the time from the first publication until the last message was
// delivered (ceiling) or forwarded to JetStream (agent), and the steady part:
// steadyN messages in steadyD (see steadyFrom).
type segment struct {
	n       int
	whole   time.Duration
	steadyN float64
	steadyD time.Duration
}

func (s segment) steadyRate() float64 { return s.steadyN / s.steadyD.Seconds() }

// pooled is the rate of two equal segments together: their messages over
// their summed times.
func pooled(r1, r2 float64) float64 { return 2 / (1/r1 + 1/r2) }

// pooledRates are the messages of segs over their summed times: whole and
// steady.
func pooledRates(segs []segment) (whole, steady float64) {
	var n, sn float64
	var d, sd time.Duration
	for _, s := range segs {
		n, d, sn, sd = n+float64(s.n), d+s.whole, sn+s.steadyN, sd+s.steadyD
	}
	return n / d.Seconds(), sn / sd.Seconds()
}

// sfBenchCeiling: the same broker, publisher and payloads delivering at QoS 1
// to a paho subscriber that does nothing.
func sfBenchCeiling(b *testing.B, mq *stack.Mosquitto, topics, payloads []string) segment {
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
	published, atPublished := time.Now(), got.Load()
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		b.Fatalf("subscriber got %d of %d messages", got.Load(), n)
	}
	whole := time.Since(start)
	// Callbacks run concurrently: the ones that counted lo and hi may still
	// be about to store their times.
	for tLo.Load() == 0 || tHi.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	seg := segment{n: int(n), whole: whole, steadyN: float64(hi - lo), steadyD: time.Duration(tHi.Load() - tLo.Load())}
	if t := published.UnixNano(); t < tHi.Load() { // the publisher was done first (see steadyFrom)
		if t <= tLo.Load() {
			b.Fatalf("ceiling: the publisher was done before the subscriber had %d messages", lo)
		}
		seg.steadyN, seg.steadyD = float64(atPublished-lo), time.Duration(t-tLo.Load())
	}
	return seg
}

// sfBenchAgent publishes payloads to the agent's broker and returns when the
// agent has forwarded their raw readings (4 a message) to JetStream, having
// forwarded sent raw readings before. It polls the agent's status every
// 50 ms: often enough to time the steady part to within a percent, seldom
// enough to cost the agent little (the ceiling has no such load).
func sfBenchAgent(b *testing.B, s *stack.Stack, mqURL string, topics, payloads []string, sent float64) segment {
	n := len(payloads)
	var polls []time.Time
	var counts []float64 // messages of this segment forwarded: raw readings / 4
	polled := make(chan error, 1)
	start := time.Now()
	go func() {
		deadline := time.Now().Add(2 * time.Minute)
		last := 0.0
		for {
			var st struct {
				Forward struct {
					Raw float64 `json:"raw_readings_sent"`
				} `json:"forward"`
			}
			if err := stack.GetJSON(context.Background(), s.URL(stack.Edge)+"/api/v1/status", &st); err == nil {
				last = (st.Forward.Raw - sent) / 4
				polls, counts = append(polls, time.Now()), append(counts, last)
				if last >= float64(n) {
					polled <- nil
					return
				}
			}
			if time.Now().After(deadline) {
				polled <- fmt.Errorf("agent forwarded the raw readings of %.0f of %d messages in 2 minutes", last, n)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	sfBenchPublish(b, mqURL, topics, payloads)
	published := time.Now()
	if err := <-polled; err != nil {
		b.Fatal(err)
	}
	seg := segment{n: n, whole: time.Since(start)}
	i, j, ok := steadyWindow(counts, float64(n))
	for ok && polls[j].After(published) { // see steadyFrom
		j--
		ok = j > i
	}
	if !ok {
		b.Fatalf("agent: no steady part in %d status polls", len(polls))
	}
	seg.steadyN, seg.steadyD = counts[j]-counts[i], polls[j].Sub(polls[i])
	return seg
}

// The steady rate of a segment is measured from when steadyFrom of its
// messages have arrived to when steadyTo have, or the publisher has had all
// of them acknowledged by the broker if that comes first. It leaves out the
// start (connections, the first batches) and the end: the last batch of the
// agent's segment waits up to batch_max_age to be sealed (the ceiling has no
// such wait), and once the publisher is done, whatever the broker still
// holds for the agent is delivered on a machine with one busy process less,
// which the ceiling's subscriber, keeping up with the publisher, never has.
const steadyFrom, steadyTo = 0.1, 0.9

// steadyWindow returns the first sample that reaches steadyFrom of total and
// the first that reaches steadyTo.
func steadyWindow(counts []float64, total float64) (i, j int, ok bool) {
	i, j = -1, -1
	for k, c := range counts {
		if i < 0 && c >= steadyFrom*total {
			i = k
		}
		if c >= steadyTo*total {
			j = k
			break
		}
	}
	return i, j, i >= 0 && j > i
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
// of the same broker configuration, publisher and payloads delivering to a
// subscriber that does nothing.
//
// This machine's speed drifts by a tenth and more within a minute, so the
// two are measured in turns: ceiling, agent, ceiling, agent, ceiling, agent,
// ceiling, each turn a segment of sfSegment messages (the agent's segments
// carry on one stream of readings; each ceiling segment replays the payloads
// of the agent segment after it, the last one those of the agent segment
// before it). The ceiling runs on a second Mosquitto of the same
// configuration, which keeps the agent's persistent session on the first
// one out of it. The ratio, %-of-ceiling, is of the sustained rates: each
// segment's from when 10 % of its messages have arrived to when 90 % have
// or the publisher is done, whichever is first (steadyFrom), pooled over the
// segments. Also reported: the same over
// whole segments, start-up and the agent's last batch of each segment
// included (whole-%-of-ceiling); the lowest ratio of one agent segment to
// the ceiling segments either side of it (min-segment-%-of-ceiling); the
// agent's peak RSS, bytes it wrote to disk per reading (write_bytes),
// encoded bytes on the wire per reading, and the CPU time per message of
// each process and of the whole machine. On a machine with few cores the
// broker, the publisher and the agent share them, so the ratio follows the
// CPU per message: about (broker + publisher + subscriber) / (broker +
// publisher + agent + gateway), or the ratio of the machine's CPU per
// message.
//
//	go test -run '^$' -bench StoreForwardIngest -benchtime 1x ./tools/e2e/
func BenchmarkStoreForwardIngest(b *testing.B) {
	const rounds, sfSegment = 3, 100_000
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
				conf := fmt.Sprintf("max_inflight_messages %d", inflight)
				mq, mqC := sfMosquitto(b, conf), sfMosquitto(b, conf)
				topics, payloads := sfBenchPayloads(rounds*sfSegment, c.smooth)
				part := func(r int) ([]string, []string) {
					return topics[r*sfSegment : (r+1)*sfSegment], payloads[r*sfSegment : (r+1)*sfSegment]
				}
				s, _ := sfStack(b, sfOptions{mqttURL: mq.URL(), noCloud: true, edgeEnv: []string{"GOMAXPROCS=1"}})
				pid := s.Proc(stack.Edge).Cmd.Process.Pid
				gw := s.Proc(stack.Gateway).Cmd.Process.Pid
				self := os.Getpid()
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
					if err := stack.GetJSON(context.Background(), s.URL(stack.Edge)+"/api/v1/status", &st); err != nil {
						b.Fatal(err)
					}
					return st.Buffer.Commits
				}
				c0 := commits()
				w0, _ := stack.ProcWriteBytes(pid)

				// CPU per message of each process, summed over the ceiling's
				// segments and over the agent's.
				type cpu struct{ machine, steal, self, broker, agent, gateway time.Duration }
				sample := func(broker *stack.Mosquitto) cpu {
					m, st := machineCPU(b)
					return cpu{machine: m, steal: st, self: procCPU(b, self), broker: procCPU(b, broker.Pid()), agent: procCPU(b, pid), gateway: procCPU(b, gw)}
				}
				var ceilCPU, agentCPU cpu
				add := func(sum *cpu, a, z cpu) {
					sum.machine += z.machine - a.machine
					sum.steal += z.steal - a.steal
					sum.self += z.self - a.self
					sum.broker += z.broker - a.broker
					sum.agent += z.agent - a.agent
					sum.gateway += z.gateway - a.gateway
				}
				var ceil, agent []segment
				ceiling := func(r int) {
					a := sample(mqC)
					ts, ps := part(r)
					ceil = append(ceil, sfBenchCeiling(b, mqC, ts, ps))
					add(&ceilCPU, a, sample(mqC))
				}
				b.ResetTimer()
				for r := range rounds {
					ceiling(r)
					a := sample(mq)
					ts, ps := part(r)
					agent = append(agent, sfBenchAgent(b, s, mq.URL(), ts, ps, float64(4*r*sfSegment)))
					add(&agentCPU, a, sample(mq))
				}
				ceiling(rounds - 1)
				b.StopTimer()

				c1 := commits()
				out, err := stack.Get(context.Background(), s.URL(stack.Edge)+"/metrics")
				if err != nil {
					b.Fatal(err)
				}
				alerts, err := stack.SumSeries(out, "updraft_edge_alerts_total")
				if err != nil {
					b.Fatal(err)
				}
				close(stop)
				<-sampled
				w1, _ := stack.ProcWriteBytes(pid)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				streamed, err := stack.ReadStream(ctx, s.NATSURL(), "TELEMETRY")
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Stop(); err != nil {
					b.Fatal(err)
				}

				messages := float64(rounds * sfSegment)
				nCeil := float64(len(ceil) * sfSegment)
				rate, steady := pooledRates(agent)
				ceilRate, ceilSteady := pooledRates(ceil)
				minSeg, segs := math.Inf(1), []string{}
				for r, a := range agent {
					rr := 100 * a.steadyRate() / pooled(ceil[r].steadyRate(), ceil[r+1].steadyRate())
					minSeg = min(minSeg, rr)
					segs = append(segs, fmt.Sprintf("%.0f msgs/s against %.0f and %.0f (%.0f%%)", a.steadyRate(), ceil[r].steadyRate(), ceil[r+1].steadyRate(), rr))
				}
				perMsg := func(d time.Duration, n float64) float64 { return float64(d.Microseconds()) / n }
				b.ReportMetric(steady, "msgs/s")
				b.ReportMetric(4*steady, "readings/s")
				b.ReportMetric(ceilSteady, "ceiling-msgs/s")
				b.ReportMetric(100*steady/ceilSteady, "%-of-ceiling")
				b.ReportMetric(minSeg, "min-segment-%-of-ceiling")
				b.ReportMetric(rate, "whole-msgs/s")
				b.ReportMetric(ceilRate, "whole-ceiling-msgs/s")
				b.ReportMetric(100*rate/ceilRate, "whole-%-of-ceiling")
				b.ReportMetric(float64(peakRSS.Load())/(1<<20), "peak-RSS-MiB")
				b.ReportMetric(messages/(c1-c0), "msgs/commit")
				b.ReportMetric(alerts/messages, "alerts/msg")
				b.ReportMetric(float64(w1-w0)/(4*messages), "disk-B/reading")
				b.ReportMetric(perMsg(agentCPU.agent, messages), "agent-CPU-µs/msg")
				b.ReportMetric(float64(streamed.Bytes)/(4*messages), "wire-B/reading")
				b.ReportMetric(perMsg(ceilCPU.machine, nCeil), "ceiling-machine-CPU-µs/msg")
				b.ReportMetric(perMsg(agentCPU.machine, messages), "machine-CPU-µs/msg")
				b.Logf("%s", strings.Join([]string{
					fmt.Sprintf("agent: %d messages (%d readings) into JetStream in %d segments", int(messages), 4*int(messages), rounds),
					fmt.Sprintf("sustained (%.0f-%.0f%% of each segment): %.0f msgs/s (%.0f readings/s), ceiling %.0f msgs/s; ratio %.0f%%",
						100*steadyFrom, 100*steadyTo, steady, 4*steady, ceilSteady, 100*steady/ceilSteady),
					fmt.Sprintf("segments: %s", strings.Join(segs, ", ")),
					fmt.Sprintf("whole segments: %.0f msgs/s, ceiling %.0f msgs/s; ratio %.0f%%", rate, ceilRate, 100*rate/ceilRate),
					fmt.Sprintf("machine CPU µs/msg (steal): ceiling %.1f (%.1f), agent %.1f (%.1f), ratio %.0f%%",
						perMsg(ceilCPU.machine, nCeil), perMsg(ceilCPU.steal, nCeil), perMsg(agentCPU.machine, messages), perMsg(agentCPU.steal, messages),
						100*perMsg(ceilCPU.machine, nCeil)/perMsg(agentCPU.machine, messages)),
					fmt.Sprintf("CPU µs/msg: ceiling: broker %.1f, publisher and subscriber %.1f; agent: broker %.1f, publisher and status polls %.1f, agent %.1f, gateway %.1f",
						perMsg(ceilCPU.broker, nCeil), perMsg(ceilCPU.self, nCeil), perMsg(agentCPU.broker, messages), perMsg(agentCPU.self, messages),
						perMsg(agentCPU.agent, messages), perMsg(agentCPU.gateway, messages)),
					fmt.Sprintf("%d batches on the wire", streamed.Batches)}, "; "))
			}
		})
	}
}
