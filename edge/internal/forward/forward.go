// Package forward is where readings leave the edge: it takes sealed batches
// from the durable buffer, encodes them in the batch wire format and publishes
// them to the regional JetStream stream. A batch is removed from the buffer
// only after JetStream acknowledged it; until then it is retried with the same
// Nats-Msg-Id, so the stream's duplicate window absorbs any re-send.
package forward

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	"github.com/updraft-io/updraft/schemas/config"
)

// Config tunes forwarding.
type Config struct {
	MaxInFlight  int           `yaml:"max_in_flight" help:"batches published and awaiting a JetStream ack at once, per lane (live and backlog)"`
	AckTimeout   time.Duration `yaml:"ack_timeout" help:"how long to wait for JetStream's ack before retrying a batch"`
	RetryInitial time.Duration `yaml:"retry_initial" help:"first retry delay after a failed publish (doubles, with jitter)"`
	RetryMax     time.Duration `yaml:"retry_max" help:"longest retry delay"`
	// MaxBytesPerSecond caps the encoded batch bytes sent per second, both
	// lanes together; 0 means no cap.
	MaxBytesPerSecond int64 `yaml:"max_bytes_per_second" help:"uplink cap in encoded batch bytes per second, live and backlog together; 0 = unlimited"`
	// BacklogShare is the part of the cap the backlog may use while live
	// data needs the rest; with no live data it may use all of it.
	BacklogShare float64 `yaml:"backlog_share" help:"part of max_bytes_per_second the backlog may use while live data needs the rest (0 to 1)"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxInFlight: 8, AckTimeout: 10 * time.Second, RetryInitial: 200 * time.Millisecond, RetryMax: 10 * time.Second,
		BacklogShare: 0.5}
}

// Validate checks the settings; keys are reported under "forward.".
func (c Config) Validate() error {
	switch {
	case c.MaxInFlight < 1 || c.MaxInFlight > 1024:
		return config.Invalid("forward.max_in_flight", c.MaxInFlight, "1 to 1024")
	case c.AckTimeout < 100*time.Millisecond:
		return config.Invalid("forward.ack_timeout", c.AckTimeout, "at least 100ms")
	case c.RetryInitial <= 0:
		return config.Invalid("forward.retry_initial", c.RetryInitial, "a positive duration")
	case c.RetryMax < c.RetryInitial:
		return config.Invalid("forward.retry_max", c.RetryMax, "at least forward.retry_initial")
	case c.MaxBytesPerSecond < 0:
		return config.Invalid("forward.max_bytes_per_second", c.MaxBytesPerSecond, "0 (no cap) or a positive byte rate")
	case c.MaxBytesPerSecond > 0 && c.MaxBytesPerSecond < 1024:
		return config.Invalid("forward.max_bytes_per_second", c.MaxBytesPerSecond, "at least 1024, or 0 for no cap")
	case !(c.BacklogShare > 0 && c.BacklogShare <= 1):
		return config.Invalid("forward.backlog_share", c.BacklogShare, "more than 0 and at most 1")
	}
	return nil
}

// Source is the part of the buffer the forwarder consumes.
type Source interface {
	Claim(ctx context.Context, end buffer.End, maxAge time.Duration) (buffer.Sealed, error)
	Unclaim(seq uint64)
	Recycle(rs []schemas.Reading)
	Ack(seq uint64) error
	NextDeadLetter(ctx context.Context, after uint64) (uint64, buffer.DeadLetter, error)
	AckDeadLetter(seq uint64) error
	NextEvent(ctx context.Context, after uint64) (uint64, buffer.Event, error)
	AckEvent(seq uint64) error
	Epoch() uint64
	Stats() buffer.Stats
}

var _ Source = (*buffer.Buffer)(nil)

// replayWait: the live lane takes only batches sealed at most this long ago;
// a batch the backlog lane claims after it waited this long sealed in the
// buffer is marked replay even when it is younger than buffer.ReplayAge (it
// waited out an outage or the uplink cap).
const replayWait = 5 * time.Second

// Forwarder publishes sealed batches to JetStream in two lanes: the live lane takes the newest batch, the backlog lane the oldest,
// so after an outage live data keeps flowing while the backlog drains. Dead
// letters and events go one at a time, each in its own goroutine.
type Forwarder struct {
	cfg  Config
	edge schemas.EdgeID
	src  Source
	js   jetstream.JetStream
	log  *slog.Logger
	m    metrics
	up   *uplink

	sentBatches, sentReadings, replayReadings, failures atomic.Uint64
	rawReadings                                         atomic.Uint64    // readings of raw batches sent
	laneReadings                                        [2]atomic.Uint64 // by lane: live, backlog
	lastAck                                             atomic.Int64     // unix ns of the last JetStream ack
	liveClaimed                                         atomic.Int64     // unix ns the live lane last claimed a batch
	liveWaiting                                         atomic.Int32     // live batches waiting for the uplink

	rmu   sync.Mutex
	rates rates
}

const (
	laneLive = iota
	laneBacklog
)

var laneNames = [2]string{"live", "backlog"}

// rates are the per-second estimates the status API shows.
type rates struct {
	at       time.Time
	lane     [2]uint64 // counters at the last sample
	buffered int64
	perSec   [2]float64
	drain    float64 // buffered readings leaving per second, net of arrivals
	valid    bool
}

type metrics struct {
	batches    *prometheus.CounterVec
	readings   *prometheus.CounterVec
	failures   prometheus.Counter
	latency    prometheus.Histogram
	inFlight   prometheus.Gauge
	deadLetter prometheus.Counter
	events     prometheus.Counter
	laneRate   *prometheus.GaugeVec
	drainSecs  prometheus.Gauge
}

// New builds a Forwarder publishing through js.
func New(cfg Config, edge schemas.EdgeID, src Source, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) *Forwarder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{cfg: cfg, edge: edge, src: src, js: js, log: log}
	f.up = newUplink(cfg.MaxBytesPerSecond, cfg.BacklogShare, f.liveBusy)
	f.m = metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "updraft_edge_forward_batches_total",
			Help: "Batches acknowledged by JetStream, by mode (live or replay)."}, []string{"mode"}),
		readings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "updraft_edge_forward_readings_total",
			Help: "Readings in batches acknowledged by JetStream, by mode (live or replay)."}, []string{"mode"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_edge_forward_publish_failures_total",
			Help: "Batch publishes that failed or timed out and were retried."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "updraft_edge_forward_publish_seconds",
			Help: "Time from publishing a batch to JetStream's ack.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "updraft_edge_forward_in_flight_batches",
			Help: "Batches published and awaiting an ack."}),
		deadLetter: prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_edge_forward_dead_letters_total",
			Help: "Dead letters acknowledged by JetStream."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_edge_forward_events_total",
			Help: "Events acknowledged by JetStream."}),
		laneRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "updraft_edge_forward_readings_per_second",
			Help: "Readings acknowledged per second, by lane (live or backlog), smoothed."}, []string{"lane"}),
		drainSecs: prometheus.NewGauge(prometheus.GaugeOpts{Name: "updraft_edge_forward_drain_seconds",
			Help: "Estimated seconds until the buffer is drained; -1 while it is not shrinking."}),
	}
	if reg != nil {
		reg.MustRegister(f.m.batches, f.m.readings, f.m.failures, f.m.latency, f.m.inFlight, f.m.deadLetter,
			f.m.events, f.m.laneRate, f.m.drainSecs)
	}
	return f
}

// Stats is a snapshot for the status API.
type Stats struct {
	BatchesSent     uint64    `json:"batches_sent"`
	ReadingsSent    uint64    `json:"readings_sent"`
	RawReadingsSent uint64    `json:"raw_readings_sent"` // of ReadingsSent, those of raw batches: not aggregates or summaries
	ReplayReadings  uint64    `json:"replay_readings_sent"`
	PublishFailures uint64    `json:"publish_failures"`
	LastAck         time.Time `json:"last_ack,omitzero"`
	// LiveRate and BacklogRate are readings acknowledged per second by each
	// lane, smoothed over a few seconds.
	LiveRate    float64 `json:"live_readings_per_second"`
	BacklogRate float64 `json:"backlog_readings_per_second"`
	// DrainSeconds estimates when the buffer is empty at the current net
	// rate (sent minus arriving); -1 while it is not shrinking, 0 when empty.
	DrainSeconds float64 `json:"drain_seconds_estimate"`
	// NATS is the connection state: CONNECTED, RECONNECTING, CLOSED, ...
	NATS              string `json:"nats_state"`
	MaxBytesPerSecond int64  `json:"max_bytes_per_second"`
}

// Stats returns counters since start.
func (f *Forwarder) Stats() Stats {
	s := Stats{BatchesSent: f.sentBatches.Load(), ReadingsSent: f.sentReadings.Load(), RawReadingsSent: f.rawReadings.Load(),
		ReplayReadings: f.replayReadings.Load(), PublishFailures: f.failures.Load(),
		MaxBytesPerSecond: f.cfg.MaxBytesPerSecond}
	if ns := f.lastAck.Load(); ns != 0 {
		s.LastAck = time.Unix(0, ns).UTC()
	}
	if f.js != nil {
		if nc := f.js.Conn(); nc != nil {
			s.NATS = nc.Status().String()
		}
	}
	f.rmu.Lock()
	s.LiveRate, s.BacklogRate = f.rates.perSec[laneLive], f.rates.perSec[laneBacklog]
	s.DrainSeconds = f.drainLocked()
	f.rmu.Unlock()
	return s
}

func (f *Forwarder) drainLocked() float64 {
	r := &f.rates
	switch {
	case r.buffered == 0:
		return 0
	case !r.valid || r.drain <= 0:
		return -1
	}
	return float64(r.buffered) / r.drain
}

// sample updates the rate estimates; Run calls it every second.
func (f *Forwarder) sample(now time.Time) {
	buffered := f.src.Stats().BufferedReadings
	f.rmu.Lock()
	defer f.rmu.Unlock()
	r := &f.rates
	lanes := [2]uint64{f.laneReadings[0].Load(), f.laneReadings[1].Load()}
	if !r.at.IsZero() {
		dt := now.Sub(r.at).Seconds()
		if dt > 0 {
			const alpha = 0.4 // about a 2-3 s memory at one sample a second
			for i := range lanes {
				x := float64(lanes[i]-r.lane[i]) / dt
				r.perSec[i] = alpha*x + (1-alpha)*r.perSec[i]
			}
			x := float64(r.buffered-buffered) / dt
			if !r.valid {
				r.drain, r.valid = x, true
			} else {
				r.drain = alpha*x + (1-alpha)*r.drain
			}
		}
	}
	r.at, r.lane, r.buffered = now, lanes, buffered
	f.m.laneRate.WithLabelValues("live").Set(r.perSec[laneLive])
	f.m.laneRate.WithLabelValues("backlog").Set(r.perSec[laneBacklog])
	f.m.drainSecs.Set(f.drainLocked())
}

// liveBusy: the live lane has data to send, so the backlog keeps to its share.
func (f *Forwarder) liveBusy() bool {
	return f.liveWaiting.Load() > 0 || time.Now().UnixNano()-f.liveClaimed.Load() < int64(time.Second)
}

// Run forwards until ctx ends. Batches in flight when ctx ends stay in the
// buffer and are sent again, with the same identity, on the next start.
func (f *Forwarder) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(3)
	go func() { defer wg.Done(); f.deadLetters(ctx) }()
	go func() { defer wg.Done(); f.events(ctx) }()
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			f.sample(time.Now())
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	errs := make(chan error, 2)
	for lane, end := range [2]buffer.End{buffer.Newest, buffer.Oldest} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.lane(ctx, lane, end)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	return errors.Join(<-errs, <-errs)
}

// lane claims batches from one end of the buffer and publishes them with at
// most MaxInFlight awaiting an ack.
func (f *Forwarder) lane(ctx context.Context, lane int, end buffer.End) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, f.cfg.MaxInFlight)
	for {
		// Take a slot before claiming, so claimed batches never pile up
		// unsent where the limit policies cannot reach them.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		var maxAge time.Duration
		if lane == laneLive {
			maxAge = replayWait
		}
		s, err := f.src.Claim(ctx, end, maxAge)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("claim sealed batch (%s lane): %w", laneNames[lane], err)
		}
		if lane == laneLive {
			f.liveClaimed.Store(time.Now().UnixNano())
		} else if !s.Replay && time.Since(s.SealedAt) > replayWait {
			s.Replay = true
		}
		msg, err := batch.Encode(s.ID, s.Kind, s.Replay, s.Readings)
		if err != nil {
			// A sealed batch that cannot be encoded is a bug: stop rather than skip data.
			return fmt.Errorf("encode sealed batch %s: %w", s.ID, err)
		}
		// Only the encoded form waits for the ack: decoded readings are
		// several times larger, and 2 x max_in_flight batches may wait.
		count := len(s.Readings)
		f.src.Recycle(s.Readings)
		s.Readings = nil
		if lane == laneLive {
			f.liveWaiting.Add(1)
		}
		err = f.up.wait(ctx, lane == laneBacklog, len(msg.Data))
		if lane == laneLive {
			f.liveWaiting.Add(-1)
		}
		if err != nil {
			f.src.Unclaim(s.ID.Seq)
			return nil
		}
		f.m.inFlight.Inc()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots; f.m.inFlight.Dec() }()
			f.publish(ctx, lane, s, count, msg)
		}()
	}
}

// publish retries until JetStream acknowledges or ctx ends.
func (f *Forwarder) publish(ctx context.Context, lane int, s buffer.Sealed, count int, msg *batch.Message) {
	nm := &nats.Msg{Subject: msg.Subject, Header: msg.Header, Data: msg.Data}
	err := f.retry(ctx, "batch "+s.ID.String(), func(ctx context.Context) error {
		if !s.Replay && time.Since(s.SealedAt) > replayWait {
			// It waited out an outage: it is backlog now. The identity, and
			// so the dedup, does not depend on the header.
			s.Replay = true
			nm.Header.Set(batch.HdrReplay, "1")
		}
		start := time.Now()
		ack, err := f.js.PublishMsg(ctx, nm)
		if err != nil {
			return err
		}
		f.m.latency.Observe(time.Since(start).Seconds())
		if ack.Duplicate {
			f.log.Debug("batch was already in the stream", "batch", s.ID.String(), "stream", ack.Stream)
		}
		return nil
	})
	if err != nil {
		f.src.Unclaim(s.ID.Seq)
		return // ctx ended; the batch stays in the buffer
	}
	if err := f.src.Ack(s.ID.Seq); err != nil {
		// Not fatal for delivery: the batch is re-sent after a restart and
		// JetStream and the lake deduplicate it.
		f.log.Error("mark batch acknowledged", "batch", s.ID.String(), "err", err)
		return
	}
	mode := "live"
	if s.Replay {
		mode = "replay"
	}
	n := uint64(count)
	f.sentBatches.Add(1)
	f.sentReadings.Add(n)
	if s.Kind == schemas.KindRaw {
		f.rawReadings.Add(n)
	}
	f.laneReadings[lane].Add(n)
	if s.Replay {
		f.replayReadings.Add(n)
	}
	f.lastAck.Store(time.Now().UnixNano())
	f.m.batches.WithLabelValues(mode).Inc()
	f.m.readings.WithLabelValues(mode).Add(float64(n))
}

// retry calls op with a per-attempt timeout until it succeeds or ctx ends,
// backing off exponentially with full jitter so that many edges reconnecting
// after a regional outage do not hammer the gateway in lockstep.
func (f *Forwarder) retry(ctx context.Context, what string, op func(context.Context) error) error {
	delay := f.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, f.cfg.AckTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.failures.Add(1)
		f.m.failures.Inc()
		lvl := slog.LevelDebug
		if attempt == 1 || attempt%10 == 0 {
			lvl = slog.LevelWarn
		}
		f.log.Log(ctx, lvl, "publish failed, will retry", "what", what, "attempt", attempt, "err", err)
		wait := time.Duration(rand.Int64N(int64(delay))) + delay/2
		if err := f.backoff(ctx, wait); err != nil {
			return err
		}
		delay = min(delay*2, f.cfg.RetryMax)
	}
}

// backoff waits d, or less when the NATS connection comes back: after an
// outage the batches in flight are re-sent at once, not after their backoff,
// so live data is not held up behind them.
func (f *Forwarder) backoff(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	var nc *nats.Conn
	if f.js != nil {
		nc = f.js.Conn()
	}
	var poll <-chan time.Time
	if nc != nil && !nc.IsConnected() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-poll:
			if nc.IsConnected() {
				return nil
			}
		}
	}
}

// DeadLetterBody is the JSON body of a dead-letter message.
type DeadLetterBody struct {
	Topic      string    `json:"topic"`
	Reason     string    `json:"reason"`
	ReceivedAt time.Time `json:"received_at"`
	PayloadB64 string    `json:"payload_b64"`
	Truncated  bool      `json:"payload_truncated"`
}

func (f *Forwarder) deadLetters(ctx context.Context) {
	subject := schemas.DeadLetterSubject(f.edge)
	forwardSide(ctx, f, "dead letter", "dl", f.src.NextDeadLetter, f.src.AckDeadLetter, f.m.deadLetter,
		func(d buffer.DeadLetter) *nats.Msg {
			body, _ := json.Marshal(DeadLetterBody{Topic: d.Topic, Reason: d.Reason, ReceivedAt: d.ReceivedAt.UTC(),
				PayloadB64: base64.StdEncoding.EncodeToString(d.Payload), Truncated: d.Truncated})
			msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
			msg.Header.Set("Updraft-Reason", d.Reason)
			return msg
		})
}

// HdrEventKind carries an event's kind, also the last token of its subject.
const HdrEventKind = "Updraft-Event-Kind"

// events publishes each event's payload as it is to
// events.<region>.<site>.<edge>.<kind>.
func (f *Forwarder) events(ctx context.Context) {
	forwardSide(ctx, f, "event", "ev", f.src.NextEvent, f.src.AckEvent, f.m.events,
		func(e buffer.Event) *nats.Msg {
			msg := &nats.Msg{Subject: schemas.EventSubject(f.edge, e.Kind), Data: e.Payload, Header: nats.Header{}}
			msg.Header.Set(HdrEventKind, e.Kind)
			return msg
		})
}

// forwardSide publishes the records of one of the buffer's side lanes in
// order, each retried until JetStream acknowledges it, then acknowledges it
// in the buffer. The message id <edge>:<epoch hex>:<idTag>:<seq> is stable
// across restarts, so the stream's duplicate window absorbs a re-send.
func forwardSide[T any](ctx context.Context, f *Forwarder, what, idTag string,
	next func(context.Context, uint64) (uint64, T, error), ack func(uint64) error, sent prometheus.Counter,
	msgOf func(T) *nats.Msg) {
	idPrefix := f.edge.String() + ":" + strconv.FormatUint(f.src.Epoch(), 16) + ":" + idTag + ":"
	var after uint64
	for {
		seq, rec, err := next(ctx, after)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Error("next "+what, "err", err)
			}
			return
		}
		after = seq
		id := strconv.FormatUint(seq, 10)
		msg := msgOf(rec)
		msg.Header.Set(batch.HdrEdge, f.edge.String())
		msg.Header.Set(nats.MsgIdHdr, idPrefix+id)
		if err := f.retry(ctx, what+" "+id, func(ctx context.Context) error {
			_, err := f.js.PublishMsg(ctx, msg)
			return err
		}); err != nil {
			return
		}
		if err := ack(seq); err != nil && !errors.Is(err, context.Canceled) {
			f.log.Error("mark "+what+" acknowledged", "seq", seq, "err", err)
		}
		sent.Inc()
	}
}
