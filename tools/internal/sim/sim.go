// Package sim simulates a fleet of MQTT sensors for Updraft: N devices
// publish readings in one of the payload formats the agent decodes (flat
// JSON by default; SenML, Sparkplug B, Tasmota, Zigbee2MQTT, Homie, plain
// numbers) (a daily cycle plus noise and drift, quantized
// to each sensor's resolution) at a total rate over a few shared
// connections, deterministically for a seed, and it counts what the broker
// acknowledged so a run can be checked end to end against the lake.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/updraft-io/updraft/schemas/ops"
)

// Sim is one simulator run.
type Sim struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	http    *ops.Server
	signal  *signal
	devices []*device

	progressOut io.Writer
	terminal    bool

	started    atomic.Bool
	running    atomic.Bool
	publishing chan struct{}
	stats      stats
}

// New validates cfg and prepares a run; Run starts it.
func New(cfg Config, log *slog.Logger) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sim{cfg: cfg, log: log, reg: ops.NewRegistry(), signal: newSignal(cfg), publishing: make(chan struct{})}
	s.devices = make([]*device, cfg.Devices)
	for i := range s.devices {
		s.devices[i] = s.signal.newDevice(cfg.Seed, i, cfg.topic())
	}
	if cfg.Format == FormatSparkplug {
		for i := range cfg.connections() {
			s.signal.nodes = append(s.signal.nodes, &spNode{id: spNodeID(i)})
		}
	}
	s.stats.perDevice = make([]atomic.Int64, cfg.Devices)
	s.progressOut, s.terminal = os.Stderr, isTerminal(os.Stderr)
	s.registerMetrics()
	if cfg.HTTP.Addr != "" {
		s.http = &ops.Server{
			Addr:     cfg.HTTP.Addr,
			Registry: s.reg,
			Ready: func() error {
				if !s.running.Load() {
					return errors.New("not publishing")
				}
				return nil
			},
			Handlers: map[string]http.Handler{"GET /api/v1/status": http.HandlerFunc(s.serveStatus)},
			Log:      log,
		}
	}
	return s, nil
}

// SetProgressOutput sends the live progress line to w, which is a terminal
// if terminal is true (by default stderr, detected). Without a terminal,
// progress goes to the log every cfg.Progress.
func (s *Sim) SetProgressOutput(w io.Writer, terminal bool) { s.progressOut, s.terminal = w, terminal }

// Publishing is closed once every connection is up and publishing starts.
func (s *Sim) Publishing() <-chan struct{} { return s.publishing }

// HTTPURL is the base URL of the ops endpoints, valid once Publishing is
// closed; "" when http.addr is empty.
func (s *Sim) HTTPURL() string {
	if s.http == nil {
		return ""
	}
	return s.http.URL()
}

// conn is one MQTT connection and the publishes it has in flight. slots
// bounds them; pending keeps their tokens in publish order for the acker.
type conn struct {
	client  mqtt.Client
	slots   chan struct{}
	pending chan inflight
}

type inflight struct {
	token    mqtt.Token
	device   int
	readings int
}

// Run connects, publishes until ctx ends or the configured duration or
// message count is reached, waits for the acks in flight, writes the summary
// and returns. Stopping by ctx is a normal end: Run then returns nil too.
func (s *Sim) Run(ctx context.Context) (err error) {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("sim: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if s.http != nil {
		if err := s.http.Listen(); err != nil {
			return err
		}
		// HTTP outlives ctx so the final counters stay readable while the
		// in-flight acks drain.
		hctx, stopHTTP := context.WithCancel(context.Background())
		httpDone := make(chan error, 1)
		go func() {
			err := s.http.Run(hctx)
			if err != nil {
				cancel() // a simulator nobody can observe should not run on
			}
			httpDone <- err
		}()
		defer func() {
			stopHTTP()
			if herr := <-httpDone; herr != nil {
				err = herr
			}
		}()
	}

	conns, err := s.connect(ctx)
	if err != nil {
		return err
	}
	s.stats.start(time.Now())
	s.running.Store(true)
	close(s.publishing)
	s.log.Info("publishing", "broker", s.cfg.Broker, "devices", s.cfg.Devices, "rate", s.cfg.Rate, "qos", s.cfg.QoS,
		"connections", len(conns), "duration", s.cfg.Duration, "messages", s.cfg.Messages, "seed", s.cfg.Seed)

	var ackers sync.WaitGroup
	abort := make(chan struct{})
	for _, c := range conns {
		ackers.Go(func() { s.ack(c, abort) })
	}
	stopMeter := s.startMeter()

	s.publish(ctx, conns)

	for _, c := range conns {
		close(c.pending)
	}
	drained := make(chan struct{})
	go func() { ackers.Wait(); close(drained) }()
	drainTimer := time.NewTimer(s.cfg.DrainTimeout)
	select {
	case <-drained:
	case <-drainTimer.C:
		s.log.Warn("broker did not acknowledge every message in time", "drain_timeout", s.cfg.DrainTimeout,
			"in_flight", s.stats.inflight.Load())
		close(abort)
		<-drained
	}
	drainTimer.Stop()
	s.stats.finish(time.Now())
	s.running.Store(false)
	for _, c := range conns {
		c.client.Disconnect(250)
	}
	stopMeter()

	sum := s.Summary()
	s.log.Info("finished", "messages", sum.Messages, "readings", sum.Readings, "errors", sum.Errors,
		"elapsed", sum.Finished.Sub(sum.Started).Round(time.Millisecond))
	if s.cfg.Summary != "" {
		return writeSummary(s.cfg.Summary, sum)
	}
	return nil
}

// connect opens every connection, retrying refused attempts until
// connect_timeout so the simulator can start before the broker.
func (s *Sim) connect(ctx context.Context) ([]*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	conns := make([]*conn, 0, s.cfg.connections())
	closeAll := func() {
		for _, c := range conns {
			c.client.Disconnect(0)
		}
	}
	tlsConfig, err := s.cfg.TLS.config()
	if err != nil {
		return nil, err
	}
	perConn := s.cfg.inflightPerConn()
	for i := range s.cfg.connections() {
		id := s.cfg.ClientIDPrefix + "-" + strconv.Itoa(i+1)
		opts := mqtt.NewClientOptions().
			AddBroker(s.cfg.Broker).
			SetClientID(id).
			SetUsername(s.cfg.Username).
			SetPassword(s.cfg.Password).
			SetCleanSession(true).
			// Publish-only: ordering of incoming messages is irrelevant,
			// and unordered handling keeps keep-alives flowing.
			SetOrderMatters(false).
			SetAutoReconnect(true).
			SetConnectTimeout(min(s.cfg.ConnectTimeout, 10*time.Second)).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) {
				s.log.Warn("connection lost; reconnecting", "client", id, "err", err)
			})
		if tlsConfig != nil {
			opts.SetTLSConfig(tlsConfig)
		}
		if s.cfg.Format == FormatSparkplug {
			node := s.signal.nodes[i]
			topic, will := spDeath(node.id)
			opts.SetBinaryWill(topic, will, 0, false)
			// A host that missed messages asks for births on NCMD.
			opts.SetOnConnectHandler(func(c mqtt.Client) {
				c.Subscribe(spTopic("NCMD", node.id, ""), 0, func(mqtt.Client, mqtt.Message) { node.rebirth.Store(true) })
			})
		}
		client := mqtt.NewClient(opts)
		if err := s.connectOne(ctx, client, id); err != nil {
			closeAll()
			return nil, err
		}
		conns = append(conns, &conn{
			client:  client,
			slots:   make(chan struct{}, perConn),
			pending: make(chan inflight, perConn),
		})
	}
	return conns, nil
}

func (s *Sim) connectOne(ctx context.Context, client mqtt.Client, id string) error {
	const retry = 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		tok := client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			client.Disconnect(0)
			return fmt.Errorf("connect %s to %s: %w", id, s.cfg.Broker, context.Cause(ctx))
		}
		err := tok.Error()
		if err == nil {
			return nil
		}
		if attempt == 1 {
			s.log.Warn("broker not reachable yet; retrying", "broker", s.cfg.Broker, "client", id, "err", err)
		}
		t := time.NewTimer(retry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if cause := context.Cause(ctx); errors.Is(cause, context.Canceled) {
				return fmt.Errorf("connect %s to %s: %w", id, s.cfg.Broker, cause)
			}
			return fmt.Errorf("connect %s to %s: gave up after %d attempts in connect_timeout %s: %w",
				id, s.cfg.Broker, attempt, s.cfg.ConnectTimeout, err)
		}
	}
}

// publish paces the messages: message n is due at start + n/rate. Being
// late, it catches up at once; being early by more than a millisecond, it
// waits, so the average rate holds without a timer per message.
func (s *Sim) publish(ctx context.Context, conns []*conn) {
	order := newOrder(s.cfg.Seed, len(s.devices))
	start := time.Now()
	var deadline time.Time
	if s.cfg.Duration > 0 {
		deadline = start.Add(s.cfg.Duration)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	wait := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	qos := byte(s.cfg.QoS)
	var msgs []message
	for n := int64(0); s.cfg.Messages == 0 || n < s.cfg.Messages; n++ {
		now := time.Now()
		if s.cfg.Rate > 0 {
			due := start.Add(time.Duration(float64(n) / s.cfg.Rate * float64(time.Second)))
			if ahead := due.Sub(now); ahead > time.Millisecond {
				if !deadline.IsZero() && due.After(deadline) {
					ahead = deadline.Sub(now)
				}
				if !wait(ahead) {
					return
				}
				now = time.Now()
			}
		}
		if !deadline.IsZero() && !now.Before(deadline) {
			return
		}
		d := s.devices[order.next()]
		ci := d.index % len(conns)
		c := conns[ci]
		msgs = s.signal.messages(msgs[:0], d, ci, time.Now())
		for _, m := range msgs {
			select {
			case c.slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			s.stats.inflight.Add(1)
			tok := c.client.Publish(m.topic, qos, false, m.payload)
			s.stats.sent.Add(1)
			c.pending <- inflight{token: tok, device: d.index, readings: m.readings}
		}
	}
}

// ack counts the outcome of each publish of c in order. Acks come back in
// order on one connection, so waiting for the oldest first costs nothing.
func (s *Sim) ack(c *conn, abort <-chan struct{}) {
	for p := range c.pending {
		select {
		case <-p.token.Done():
			if err := p.token.Error(); err != nil {
				s.stats.errors.Add(1)
				s.log.Debug("publish failed", "device", DeviceID(p.device), "err", err)
			} else {
				s.stats.acked.Add(1)
				s.stats.ackedReadings.Add(int64(p.readings))
				s.stats.perDevice[p.device].Add(int64(p.readings))
			}
		case <-abort:
			s.stats.errors.Add(1)
		}
		s.stats.inflight.Add(-1)
		<-c.slots
	}
}
