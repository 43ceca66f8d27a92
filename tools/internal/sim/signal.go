package sim

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// device is one simulated sensor. Its values come from its own random
// source, seeded from the run's seed and its index, so they do not depend on
// how devices interleave or which connection publishes them.
type device struct {
	index int
	id    string
	topic string
	rng   *rand.Rand
	// step counts the samples taken; the signal's clock is step times the
	// nominal sample interval, not the wall clock, so values repeat exactly
	// for a seed however fast the broker is.
	step   int64
	lastTS int64
	chans  []channel
	size   int // length of the last payload, to size the next one

	vals      []float64 // the last sample's values
	anomalies *rand.Rand
	stuck     int       // samples left with frozen values
	held      []message // a sample held back to arrive out of order
	described bool      // homie: $description published
	spEpoch   int       // sparkplug: the node birth this device's DBIRTH followed; 0 = none
}

// channel is the per-device state of one metric.
type channel struct {
	offset, phase, drift float64
}

// signal holds what all devices share.
type signal struct {
	metrics  []metricCodec
	interval float64 // seconds between two samples of one device
	omega    float64 // radians per second of the daily cycle
	// driftKeep is the AR(1) coefficient of the drift and driftStep its
	// innovation factor; together they give a stationary wander whose
	// standard deviation is Metric.Drift and that moves over half a period.
	driftKeep, driftStep float64
	withTS               bool

	format    string
	anomalies Anomalies
	nodes     []*spNode // sparkplug: one edge node per connection
}

type metricCodec struct {
	Metric
	key      []byte // `"name":`
	decimals int
}

func newSignal(c Config) *signal {
	s := &signal{withTS: c.Timestamps, format: c.Format, anomalies: c.Anomalies}
	if s.format == "" {
		s.format = FormatJSON
	}
	s.interval = 1
	if c.Rate > 0 {
		s.interval = float64(c.Devices) / c.Rate
	}
	period := c.Period.Seconds()
	s.omega = 2 * math.Pi / period
	s.driftKeep = math.Exp(-s.interval / (period / 2))
	s.driftStep = math.Sqrt(1 - s.driftKeep*s.driftKeep)
	for _, m := range c.Metrics {
		name, _ := json.Marshal(m.Name)
		s.metrics = append(s.metrics, metricCodec{Metric: m, key: append(name, ':'), decimals: decimals(m.Resolution)})
	}
	return s
}

func (s *signal) newDevice(seed int64, index int, topic string) *device {
	d := &device{
		index: index,
		id:    DeviceID(index),
		rng:   rand.New(rand.NewPCG(uint64(seed), uint64(index)+1)),
	}
	d.topic = strings.ReplaceAll(topic, "{device}", d.id)
	d.anomalies = rand.New(rand.NewPCG(uint64(seed), uint64(index)+1<<40))
	d.vals = make([]float64, len(s.metrics))
	d.chans = make([]channel, len(s.metrics))
	for i, m := range s.metrics {
		// Devices of one site read alike but not identically: a small
		// calibration offset, a slightly different phase, their own drift.
		d.chans[i] = channel{
			offset: (d.rng.Float64()*2 - 1) * m.Amplitude / 4,
			phase:  d.rng.Float64() * 2 * math.Pi / 24,
			drift:  d.rng.NormFloat64() * m.Drift,
		}
	}
	return d
}

// sample computes the device's next values into d.vals and returns its
// stamp: now (Unix ms) made strictly greater than the previous stamp so
// that (device, metric, ts) stays unique.
func (s *signal) sample(d *device, now time.Time) int64 {
	t := float64(d.step) * s.interval
	d.step++
	a := &s.anomalies
	frozen := d.stuck > 0
	if frozen {
		d.stuck--
	} else if a.Stuck > 0 && d.anomalies.Float64() < a.Stuck {
		d.stuck = 20
	}
	for i := range s.metrics {
		m := &s.metrics[i]
		ch := &d.chans[i]
		ch.drift = ch.drift*s.driftKeep + d.rng.NormFloat64()*m.Drift*s.driftStep
		v := m.Base + ch.offset + m.Amplitude*math.Sin(s.omega*t+ch.phase) + ch.drift + d.rng.NormFloat64()*m.Noise
		if frozen {
			continue
		}
		if a.Spike > 0 && d.anomalies.Float64() < a.Spike {
			v += 10 * math.Max(m.Amplitude, m.Resolution)
		}
		d.vals[i] = quantize(v, m.Resolution)
	}
	ts := max(now.UnixMilli(), d.lastTS+1)
	d.lastTS = ts
	return ts
}

// next renders the device's next JSON payload. Each payload is a new slice:
// the MQTT client keeps it until the message is written.
func (s *signal) next(d *device, now time.Time) []byte {
	ts := s.sample(d, now)
	return s.renderJSON(d, ts)
}

func (s *signal) renderJSON(d *device, ts int64) []byte {
	b := make([]byte, 0, d.size+8)
	b = append(b, '{')
	if s.withTS {
		b = append(b, `"ts":`...)
		b = strconv.AppendInt(b, ts, 10)
	}
	for i := range s.metrics {
		m := &s.metrics[i]
		if i > 0 || s.withTS {
			b = append(b, ',')
		}
		b = append(b, m.key...)
		b = strconv.AppendFloat(b, d.vals[i], 'f', m.decimals, 64)
	}
	b = append(b, '}')
	d.size = len(b)
	return b
}

// quantize rounds v to a multiple of res, as a sensor's ADC and firmware do.
func quantize(v, res float64) float64 {
	q := math.Round(v/res) * res
	if q == 0 {
		return 0 // no "-0.0"
	}
	return q
}

// decimals is the number of decimal places that a multiple of res needs:
// 0.1 and 0.5 need 1, 0.25 needs 2, 1 and 5 need 0.
func decimals(res float64) int {
	for d := 0; d < 10; d++ {
		x := res * math.Pow10(d)
		if math.Abs(x-math.Round(x)) < 1e-9*math.Max(1, x) {
			return d
		}
	}
	return 10
}

// order yields the device to publish next: every round visits every device
// once, in an order shuffled per round from the seed, so devices get equal
// shares and the sequence repeats for a seed.
type order struct {
	rng  *rand.Rand
	perm []int
	pos  int
}

func newOrder(seed int64, devices int) *order {
	o := &order{rng: rand.New(rand.NewPCG(uint64(seed), 0)), perm: make([]int, devices)}
	for i := range o.perm {
		o.perm[i] = i
	}
	o.pos = devices
	return o
}

func (o *order) next() int {
	if o.pos == len(o.perm) {
		o.rng.Shuffle(len(o.perm), func(i, j int) { o.perm[i], o.perm[j] = o.perm[j], o.perm[i] })
		o.pos = 0
	}
	o.pos++
	return o.perm[o.pos-1]
}
