// Package ingest is the cloud's consumer of a regional TELEMETRY stream: it
// pulls batches with the durable consumer lake-writer, decodes them, hands
// them to the lake writer, and acknowledges them only once the lake has
// committed them, so every batch lands in the lake exactly once.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

const (
	fetchBatch = 1000
	// idleWait bounds one pull when nothing is buffered, so shutdown and
	// consumer loss are noticed promptly.
	idleWait = 2 * time.Second
	// minWait keeps pull requests meaningful to the server.
	minWait     = 50 * time.Millisecond
	maxBackoff  = 10 * time.Second
	latencyKept = 100_000
)

// errRebind: the consumer or stream disappeared; wait for it and bind again.
var errRebind = errors.New("consumer lost")

// Ingester moves batches from JetStream into the lake.
type Ingester struct {
	cfg Config
	w   *lake.Writer
	log *slog.Logger
	m   *metrics
	lat *latencyWindow

	conn       atomic.Pointer[nats.Conn]
	bound      atomic.Bool
	waiting    atomic.Value // string: what Run waits for, "" when consuming
	duplicates atomic.Int64
	rejected   atomic.Int64

	// pending are the messages of buffered batches, acknowledged after the
	// flush that commits them.
	pending []jetstream.Msg
	runMu   sync.Mutex
}

// New returns an Ingester writing to w. log and reg may be nil.
func New(cfg Config, w *lake.Writer, log *slog.Logger, reg prometheus.Registerer) (*Ingester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in := &Ingester{cfg: cfg, w: w, log: log, lat: newLatencyWindow(latencyKept)}
	in.m = newMetrics(reg, func() float64 { return float64(w.Totals().PendingRows) })
	in.waiting.Store("not started")
	return in, nil
}

// Ready returns nil while connected to NATS with the consumer bound.
func (in *Ingester) Ready() error {
	nc := in.conn.Load()
	if nc == nil || !nc.IsConnected() {
		return fmt.Errorf("not connected to NATS at %s", in.cfg.NATS.URL)
	}
	if !in.bound.Load() {
		return fmt.Errorf("consumer %s on stream %s not ready: %s", Consumer, in.cfg.stream(), in.waiting.Load())
	}
	return nil
}

// Run consumes until ctx ends. It waits, logging, for NATS and for the
// stream (the gateway creates it; the cloud never does). On return the
// buffer has been flushed and acknowledged. Errors other than ctx's are lake
// failures: the lake must be reopened, which recovers it.
func (in *Ingester) Run(ctx context.Context) error {
	in.runMu.Lock()
	defer in.runMu.Unlock()
	nc, err := in.connect(ctx)
	if err != nil {
		return err
	}
	defer func() {
		in.conn.Store(nil)
		nc.Close()
	}()
	var js jetstream.JetStream
	if in.cfg.NATS.Domain != "" {
		js, err = jetstream.NewWithDomain(nc, in.cfg.NATS.Domain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	for {
		cons, err := in.bind(ctx, js)
		if err != nil {
			return err
		}
		err = in.consume(ctx, cons)
		in.bound.Store(false)
		if errors.Is(err, errRebind) {
			continue
		}
		// Acks are sent asynchronously; give them a moment to leave before
		// the connection closes.
		if ferr := nc.FlushTimeout(2 * time.Second); ferr != nil && err == nil && nc.IsConnected() {
			in.log.Warn("acknowledgements may not have reached NATS; they will be redelivered and skipped", "err", ferr)
		}
		return err
	}
}

func (in *Ingester) connect(ctx context.Context) (*nats.Conn, error) {
	c := in.cfg.NATS
	opts := []nats.Option{
		nats.Name("updraft-cloud " + Consumer),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				in.log.Warn("disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { in.log.Info("reconnected to NATS", "url", nc.ConnectedUrl()) }),
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	in.waiting.Store("connecting to NATS")
	for attempt, backoff := 1, 250*time.Millisecond; ; attempt++ {
		nc, err := nats.Connect(c.URL, opts...)
		if err == nil {
			in.conn.Store(nc)
			in.log.Info("connected to NATS", "url", nc.ConnectedUrl())
			return nc, nil
		}
		in.log.Warn("waiting for NATS", "url", c.URL, "attempt", attempt, "retry_in", backoff, "err", err)
		if err := sleep(ctx, backoff); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// bind waits for the stream and creates or updates the durable consumer.
func (in *Ingester) bind(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	filter := []string{
		"telemetry." + in.cfg.Region + ".*.*." + schemas.KindRaw,
		"telemetry." + in.cfg.Region + ".*.*." + schemas.KindAgg,
	}
	cc := jetstream.ConsumerConfig{
		Durable:        Consumer,
		Description:    "updraft-cloud: raw readings and aggregates into the Parquet lake",
		FilterSubjects: filter,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        in.cfg.NATS.ackWait(in.w.Config().RollInterval),
		MaxAckPending:  in.cfg.NATS.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	for attempt, backoff := 1, 250*time.Millisecond; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := js.Stream(cctx, in.cfg.stream())
		var cons jetstream.Consumer
		if err == nil {
			cons, err = s.CreateOrUpdateConsumer(cctx, cc)
		}
		cancel()
		if err == nil {
			in.bound.Store(true)
			in.waiting.Store("")
			in.log.Info("consuming", "stream", in.cfg.stream(), "consumer", Consumer, "filter", filter,
				"domain", in.cfg.NATS.Domain, "ack_wait", cc.AckWait, "max_ack_pending", cc.MaxAckPending)
			return cons, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		what := fmt.Sprintf("waiting for stream %s (the gateway or the hub creates it)", in.cfg.stream())
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			what = fmt.Sprintf("cannot bind consumer %s on stream %s", Consumer, in.cfg.stream())
		}
		in.waiting.Store(what)
		in.log.Warn(what, "domain", in.cfg.NATS.Domain, "attempt", attempt, "retry_in", backoff, "err", err)
		if err := sleep(ctx, backoff); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// consume pulls, buffers and commits until ctx ends or the consumer is lost.
func (in *Ingester) consume(ctx context.Context, cons jetstream.Consumer) error {
	maxPending := in.cfg.NATS.MaxAckPending
	backoff := 250 * time.Millisecond
	for {
		if in.w.Due(time.Now()) || len(in.pending) >= maxPending {
			if err := in.flush(); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return in.flush()
		}
		wait := idleWait
		if d := in.w.Deadline(); !d.IsZero() {
			wait = min(max(time.Until(d), minWait), idleWait)
		}
		fctx, cancel := context.WithTimeout(ctx, wait)
		mb, err := cons.Fetch(min(fetchBatch, maxPending-len(in.pending)), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				continue
			}
			if lost(err) {
				return in.lose(err)
			}
			in.log.Warn("pull from JetStream failed; retrying", "retry_in", backoff, "err", err)
			if sleep(ctx, backoff) == nil {
				backoff = min(2*backoff, maxBackoff)
			}
			continue
		}
		// Messages stream in while the pull is open; commit as soon as the
		// buffer is full rather than when the pull ends.
		for msg := range mb.Messages() {
			err := in.handle(msg)
			if err == nil && (len(in.pending) >= maxPending || in.w.Due(time.Now())) {
				err = in.flush()
			}
			if err != nil {
				cancel()
				return err
			}
		}
		cancel()
		if err := mb.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) &&
			!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			if lost(err) {
				return in.lose(err)
			}
			in.log.Debug("pull ended with an error", "err", err)
		} else {
			backoff = 250 * time.Millisecond
		}
	}
}

func lost(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

// lose commits what is buffered (it is valid data) and asks Run to bind again.
func (in *Ingester) lose(cause error) error {
	in.log.Warn("consumer lost; binding again", "consumer", Consumer, "err", cause)
	if err := in.flush(); err != nil {
		return err
	}
	return errRebind
}

// handle decodes one message and buffers, skips or quarantines it.
func (in *Ingester) handle(msg jetstream.Msg) error {
	now := time.Now()
	c, err := batch.DecodeColumns(msg.Subject(), msg.Headers(), msg.Data())
	var b *batch.Batch
	if err == nil {
		switch c.Kind {
		case schemas.KindRaw:
		case schemas.KindAgg:
			// Aggregates are few; the lake folds them as readings.
			b = c.Batch()
			err = lake.ValidateAgg(b)
		default:
			err = fmt.Errorf("kind %q is neither %s nor %s", c.Kind, schemas.KindRaw, schemas.KindAgg)
		}
	}
	if err != nil {
		return in.reject(msg, err, now)
	}
	var added lake.AddResult
	if b != nil {
		added = in.w.Add(b, now)
	} else {
		added = in.w.AddColumns(c, now)
	}
	switch added {
	case lake.DuplicateCommitted:
		in.duplicates.Add(1)
		in.m.duplicates.Inc()
		in.log.Debug("duplicate of a committed batch skipped", "batch", c.ID)
		if err := msg.Ack(); err != nil {
			in.log.Debug("ack failed; the batch will be redelivered and skipped again", "batch", c.ID, "err", err)
		}
	case lake.DuplicatePending:
		in.duplicates.Add(1)
		in.m.duplicates.Inc()
		in.pending = append(in.pending, msg)
	default:
		in.pending = append(in.pending, msg)
	}
	return nil
}

func (in *Ingester) reject(msg jetstream.Msg, cause error, now time.Time) error {
	reason := reasonOf(cause)
	if _, ok := errors.AsType[*batch.DecodeError](cause); !ok && reason == "other" {
		reason = "kind"
		if errors.Is(cause, lake.ErrAggName) {
			reason = "aggregate"
		}
	}
	r := lake.Rejected{Stream: in.cfg.stream(), Subject: msg.Subject(), Header: msg.Headers(), Reason: reason,
		Error: cause.Error(), ReceivedAt: now.UTC(), Body: msg.Data()}
	if md, err := msg.Metadata(); err == nil {
		r.StreamSeq = md.Sequence.Stream
	}
	path, err := in.w.Reject(r)
	if err != nil {
		return err
	}
	in.rejected.Add(1)
	in.m.rejected.WithLabelValues(reason).Inc()
	in.log.Warn("rejected a message that is not a valid batch", "reason", reason, "subject", msg.Subject(),
		"stream_seq", r.StreamSeq, "saved", path, "err", cause)
	// Term, not Ack: the server stops redelivering and emits an advisory.
	if err := msg.TermWithReason("updraft: " + reason); err != nil {
		in.log.Debug("term failed; the message will be redelivered and quarantined again", "err", err)
	}
	return nil
}

// flush commits the buffer, then acknowledges its messages.
func (in *Ingester) flush() error {
	c, err := in.w.Flush()
	if err != nil {
		return err
	}
	if c != nil {
		in.m.commits.Inc()
		in.m.rows.Add(float64(c.Rows))
		in.m.batches.Add(float64(len(c.Batches)))
		in.m.files.Add(float64(len(c.Files)))
		in.m.flush.Observe(c.Duration.Seconds())
		at := c.At.UnixNano()
		// Aggregates are left out: their timestamps are window starts, not
		// event times.
		for _, b := range c.Raw {
			for _, ts := range b.TS {
				in.m.e2e.Observe(time.Duration(at - ts).Seconds())
			}
			in.lat.addSince(at, b.TS)
		}
		in.log.Debug("committed", "seq", c.Seq, "rows", c.Rows, "batches", len(c.Batches), "files", len(c.Files), "took", c.Duration)
	}
	for _, msg := range in.pending {
		if err := msg.Ack(); err != nil {
			in.log.Debug("ack failed; the batch will be redelivered and skipped", "err", err)
		}
	}
	clear(in.pending)
	in.pending = in.pending[:0]
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
