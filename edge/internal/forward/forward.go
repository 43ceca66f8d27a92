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
	MaxInFlight  int           `yaml:"max_in_flight" help:"batches published and awaiting a JetStream ack at once"`
	AckTimeout   time.Duration `yaml:"ack_timeout" help:"how long to wait for JetStream's ack before retrying a batch"`
	RetryInitial time.Duration `yaml:"retry_initial" help:"first retry delay after a failed publish (doubles, with jitter)"`
	RetryMax     time.Duration `yaml:"retry_max" help:"longest retry delay"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxInFlight: 8, AckTimeout: 10 * time.Second, RetryInitial: 200 * time.Millisecond, RetryMax: 10 * time.Second}
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
	}
	return nil
}

// Source is the part of the buffer the forwarder consumes.
type Source interface {
	Next(ctx context.Context, after uint64) (buffer.Sealed, error)
	Ack(seq uint64) error
	NextDeadLetter(ctx context.Context, after uint64) (uint64, buffer.DeadLetter, error)
	AckDeadLetter(seq uint64) error
	Epoch() uint64
}

var _ Source = (*buffer.Buffer)(nil)

// Forwarder publishes sealed batches and dead letters to JetStream.
type Forwarder struct {
	cfg  Config
	edge schemas.EdgeID
	src  Source
	js   jetstream.JetStream
	log  *slog.Logger
	m    metrics

	sentBatches, sentReadings, replayReadings, failures atomic.Uint64
	lastAck                                             atomic.Int64 // unix ns of the last JetStream ack
}

type metrics struct {
	batches    *prometheus.CounterVec
	readings   *prometheus.CounterVec
	failures   prometheus.Counter
	latency    prometheus.Histogram
	inFlight   prometheus.Gauge
	deadLetter prometheus.Counter
}

// New builds a Forwarder publishing through js.
func New(cfg Config, edge schemas.EdgeID, src Source, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) *Forwarder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{cfg: cfg, edge: edge, src: src, js: js, log: log}
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
	}
	if reg != nil {
		reg.MustRegister(f.m.batches, f.m.readings, f.m.failures, f.m.latency, f.m.inFlight, f.m.deadLetter)
	}
	return f
}

// Stats is a snapshot for the status API.
type Stats struct {
	BatchesSent     uint64    `json:"batches_sent"`
	ReadingsSent    uint64    `json:"readings_sent"`
	ReplayReadings  uint64    `json:"replay_readings_sent"`
	PublishFailures uint64    `json:"publish_failures"`
	LastAck         time.Time `json:"last_ack,omitzero"`
}

// Stats returns counters since start.
func (f *Forwarder) Stats() Stats {
	s := Stats{BatchesSent: f.sentBatches.Load(), ReadingsSent: f.sentReadings.Load(),
		ReplayReadings: f.replayReadings.Load(), PublishFailures: f.failures.Load()}
	if ns := f.lastAck.Load(); ns != 0 {
		s.LastAck = time.Unix(0, ns).UTC()
	}
	return s
}

// Run forwards until ctx ends. Batches in flight when ctx ends stay in the
// buffer and are sent again, with the same identity, on the next start.
func (f *Forwarder) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.deadLetters(ctx) }()
	defer wg.Wait()

	slots := make(chan struct{}, f.cfg.MaxInFlight)
	var after uint64
	for {
		s, err := f.src.Next(ctx, after)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("next sealed batch: %w", err)
		}
		after = s.ID.Seq
		msg, err := batch.Encode(s.ID, s.Kind, s.Replay, s.Readings)
		if err != nil {
			// A sealed batch that cannot be encoded is a bug: stop rather than skip data.
			return fmt.Errorf("encode sealed batch %s: %w", s.ID, err)
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		f.m.inFlight.Inc()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots; f.m.inFlight.Dec() }()
			f.publish(ctx, s, msg)
		}()
	}
}

// publish retries until JetStream acknowledges or ctx ends.
func (f *Forwarder) publish(ctx context.Context, s buffer.Sealed, msg *batch.Message) {
	mode := "live"
	if s.Replay {
		mode = "replay"
	}
	nm := &nats.Msg{Subject: msg.Subject, Header: msg.Header, Data: msg.Data}
	err := f.retry(ctx, "batch "+s.ID.String(), func(ctx context.Context) error {
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
		return // ctx ended; the batch stays in the buffer
	}
	if err := f.src.Ack(s.ID.Seq); err != nil {
		// Not fatal for delivery: the batch is re-sent after a restart and
		// JetStream and the lake deduplicate it.
		f.log.Error("mark batch acknowledged", "batch", s.ID.String(), "err", err)
		return
	}
	n := uint64(len(s.Readings))
	f.sentBatches.Add(1)
	f.sentReadings.Add(n)
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
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay = min(delay*2, f.cfg.RetryMax)
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
	epoch := strconv.FormatUint(f.src.Epoch(), 16)
	var after uint64
	for {
		seq, d, err := f.src.NextDeadLetter(ctx, after)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Error("next dead letter", "err", err)
			}
			return
		}
		after = seq
		body, _ := json.Marshal(DeadLetterBody{Topic: d.Topic, Reason: d.Reason, ReceivedAt: d.ReceivedAt.UTC(),
			PayloadB64: base64.StdEncoding.EncodeToString(d.Payload), Truncated: d.Truncated})
		msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
		msg.Header.Set("Updraft-Reason", d.Reason)
		msg.Header.Set(batch.HdrEdge, f.edge.String())
		msg.Header.Set(nats.MsgIdHdr, f.edge.String()+":"+epoch+":dl:"+strconv.FormatUint(seq, 10))
		if err := f.retry(ctx, "dead letter "+strconv.FormatUint(seq, 10), func(ctx context.Context) error {
			_, err := f.js.PublishMsg(ctx, msg)
			return err
		}); err != nil {
			return
		}
		if err := f.src.AckDeadLetter(seq); err != nil && !errors.Is(err, context.Canceled) {
			f.log.Error("mark dead letter acknowledged", "seq", seq, "err", err)
		}
		f.m.deadLetter.Inc()
	}
}
