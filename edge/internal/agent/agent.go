// Package agent composes the edge agent: the optional embedded MQTT broker,
// MQTT ingest, window aggregation and alert rules, the durable buffer, the
// forwarder to the regional JetStream stream, and the ops/status HTTP API.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/updraft-io/updraft/edge/internal/aggregate"
	"github.com/updraft-io/updraft/edge/internal/broker"
	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/edge/internal/decode"
	"github.com/updraft-io/updraft/edge/internal/forward"
	"github.com/updraft-io/updraft/edge/internal/ingest"
	"github.com/updraft-io/updraft/edge/internal/rules"
	"github.com/updraft-io/updraft/schemas/config"
	"github.com/updraft-io/updraft/schemas/ops"
)

// Agent is a running edge agent.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	reg  *prometheus.Registry
	http *ops.Server

	// live is set once every component is built; the HTTP handlers read it.
	live    atomic.Pointer[parts]
	started time.Time
	// now is the clock of windows and rules (tests move it).
	now func() time.Time

	// reloadMu serialises Reload; cfg.Aggregate and cfg.Rules change under it.
	reloadMu sync.Mutex
}

// parts are the running components.
type parts struct {
	buf *buffer.Buffer
	in  *ingest.Ingest
	fwd *forward.Forwarder
	nc  *nats.Conn
	an  *analytics
}

// New validates cfg and binds the HTTP port, so a bad address fails at once.
// Nothing else is opened until Run.
func New(cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = ops.NewRegistry()
	}
	a := &Agent{cfg: cfg, log: log, reg: reg, now: time.Now}
	if cfg.HTTP.Addr != "" {
		a.http = &ops.Server{Addr: cfg.HTTP.Addr, Registry: reg, Ready: a.ready, Log: log,
			Handlers: map[string]http.Handler{
				"GET /api/v1/status": http.HandlerFunc(a.serveStatus),
				"GET /api/v1/latest": http.HandlerFunc(a.serveLatest),
				"GET /api/v1/alerts": http.HandlerFunc(a.serveAlerts),
			}}
		if err := a.http.Listen(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// HTTPURL is the base URL of the ops API ("" when disabled).
func (a *Agent) HTTPURL() string {
	if a.http == nil {
		return ""
	}
	return a.http.URL()
}

// Run starts every component and runs until ctx ends or one fails. On the way
// down, ingest stops first (nothing new is acknowledged), then forwarding,
// then the buffer is closed.
func (a *Agent) Run(ctx context.Context) (err error) {
	a.started = time.Now() // before any goroutine that reads it starts
	if a.cfg.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(a.cfg.MemoryLimit))
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(a.cfg.GCPercent)
	}
	if err := setCPUPolicy(a.cfg.CPUPolicy); err != nil {
		a.log.Warn("cpu_policy not applied; running with the system's", "cpu_policy", a.cfg.CPUPolicy, "err", err)
	}
	edge := a.cfg.EdgeID()
	buf, err := buffer.Open(a.cfg.Buffer, edge, a.log.With("component", "buffer"), a.reg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, buf.Close()) }()

	// Sparkplug rebirth requests go out through the ingest client, on the
	// broker the devices use; the decoder is built first, so it reaches
	// ingest through a pointer set once ingest exists.
	var cmdOut atomic.Pointer[ingest.Ingest]
	decCfg := a.cfg.Decode
	decCfg.OnCommand = func(c decode.Command) {
		if in := cmdOut.Load(); in != nil {
			in.Publish(c.Topic, c.Payload)
		}
	}
	dec, err := decode.New(decCfg, edge, time.Now)
	if err != nil {
		return err
	}
	var brk *broker.Broker
	if a.cfg.Broker.Enabled {
		if brk, err = broker.New(a.cfg.Broker, a.log.With("component", "broker")); err != nil {
			return err
		}
		// Bind before ingest connects to it, and fail fast if the port is taken.
		if err := brk.Listen(); err != nil {
			return err
		}
	}
	nc, err := a.connectNATS()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	fwd := forward.New(a.cfg.Fwd, edge, buf, js, a.log.With("component", "forward"), a.reg)
	var pub *localPublisher
	if a.cfg.Local.TopicPrefix != "" {
		id := a.cfg.MQTT.ClientID
		if id == "" {
			id = "updraft-" + edge.Region + "-" + edge.Site + "-" + edge.Edge
		}
		if pub, err = newLocalPublisher(a.cfg.MQTT, id+"-out", a.log.With("component", "local-publish")); err != nil {
			return err
		}
	}
	an, err := newAnalytics(a.cfg, buf, pub, a.now, a.log.With("component", "analytics"), a.reg)
	if err != nil {
		return err
	}
	in, err := ingest.New(a.cfg.MQTT, edge, a.cfg.Decode.Subscriptions, dec, an, a.log.With("component", "ingest"), a.reg)
	if err != nil {
		return err
	}
	cmdOut.Store(in)
	a.live.Store(&parts{buf: buf, in: in, fwd: fwd, nc: nc, an: an})
	if brk != nil {
		a.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "updraft_edge_broker_dropped_total",
			Help: "QoS 1 messages the embedded broker dropped because a subscriber had broker.max_inflight unacknowledged messages."},
			func() float64 { return float64(brk.Dropped()) }))
	}
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "updraft_edge_nats_connected",
		Help: "1 while connected to the regional NATS gateway."}, func() float64 {
		if nc.IsConnected() {
			return 1
		}
		return 0
	}))

	// Buffer, broker and HTTP outlive ingest and forwarding: they stop last.
	baseCtx, stopBase := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBase()
	base, bctx := errgroup.WithContext(baseCtx)
	base.Go(func() error { return buf.Run(bctx) })
	if brk != nil {
		base.Go(func() error { return brk.Run(bctx) })
	}
	if a.cfg.CodeRelease > 0 {
		base.Go(func() error { a.releaseCodeLoop(bctx); return nil })
	}
	if a.http != nil {
		base.Go(func() error { return a.http.Run(bctx) })
		a.log.Info("serving ops API", "url", a.http.URL())
	}

	front, fctx := errgroup.WithContext(ctx)
	front.Go(func() error {
		// A failure of the base group (buffer, broker) stops the front.
		select {
		case <-bctx.Done():
			return fmt.Errorf("edge stopping: %w", context.Cause(bctx))
		case <-fctx.Done():
			return nil
		}
	})
	front.Go(func() error { return fwd.Run(fctx) })
	front.Go(func() error { return an.Run(fctx) })
	if pub != nil {
		front.Go(func() error { return pub.Run(fctx) })
	}
	front.Go(func() error { return in.Run(fctx) })
	ferr := front.Wait()
	stopBase()
	berr := base.Wait()
	if ctx.Err() != nil && (ferr == nil || errors.Is(ferr, context.Canceled)) {
		ferr = nil
	}
	if errors.Is(berr, context.Canceled) {
		berr = nil
	}
	return errors.Join(ferr, berr)
}

// RunWithReload is Run that also reloads on every value from sig: load
// reads the configuration again; an invalid one is logged and refused and
// the running configuration stays (see Reload).
func (a *Agent) RunWithReload(ctx context.Context, sig <-chan os.Signal, load func() (Config, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				cfg, err := load()
				if err == nil {
					err = a.Reload(cfg)
				} else {
					err = fmt.Errorf("reload refused, the running configuration stays: %w", err)
				}
				if err != nil {
					a.log.Error("configuration reload failed", "err", err)
				}
			}
		}
	}()
	err := a.Run(ctx)
	cancel()
	<-done
	return err
}

func (a *Agent) connectNATS() (*nats.Conn, error) {
	c := a.cfg.NATS
	opts := []nats.Option{
		nats.Name("updraft-edge " + a.cfg.EdgeID().String()),
		// The buffer holds everything while the uplink is down: never give up.
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.ConnectHandler(func(*nats.Conn) { a.log.Info("nats connected", "url", c.URL) }),
		nats.ReconnectHandler(func(*nats.Conn) { a.log.Info("nats reconnected", "url", c.URL) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				a.log.Warn("nats disconnected; buffering", "err", err)
			}
		}),
	}
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_file: %w", err)
		}
		opts = append(opts, o)
	case c.User != "":
		pw := ""
		if c.PasswordFile != "" {
			b, err := os.ReadFile(c.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("read nats.password_file: %w", err)
			}
			pw = strings.TrimRight(string(b), "\r\n")
		}
		opts = append(opts, nats.UserInfo(c.User, pw))
	}
	tc, err := config.ClientTLS("nats", c.CAFile, c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", c.URL, err)
	}
	return nc, nil
}

// ready: the agent can accept data when its buffer is open and it is
// subscribed to the broker. A down uplink does not make it unready: that is
// exactly when the buffer earns its keep.
func (a *Agent) ready() error {
	p := a.live.Load()
	if p == nil {
		return errors.New("starting")
	}
	if !p.in.Connected() {
		return errors.New("not connected to the MQTT broker")
	}
	return nil
}

// Status is the JSON of GET /api/v1/status.
type Status struct {
	Edge      string           `json:"edge"`
	Version   string           `json:"version"`
	Uptime    string           `json:"uptime"`
	NATS      NATSStatus       `json:"nats"`
	MQTT      ingest.Stats     `json:"mqtt"`
	Buffer    buffer.Stats     `json:"buffer"`
	Forward   forward.Stats    `json:"forward"`
	Aggregate *aggregate.Stats `json:"aggregate,omitempty"`
	Firing    int              `json:"alerts_firing"`
}

// NATSStatus is the uplink's state.
type NATSStatus struct {
	Connected bool   `json:"connected"`
	URL       string `json:"url"`
}

func (a *Agent) serveStatus(w http.ResponseWriter, _ *http.Request) {
	p := a.live.Load()
	if p == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	st := Status{
		Edge: a.cfg.EdgeID().String(), Version: config.VersionString(), Uptime: time.Since(a.started).Round(time.Second).String(),
		NATS:    NATSStatus{Connected: p.nc.IsConnected(), URL: p.nc.ConnectedUrlRedacted()},
		MQTT:    p.in.Stats(),
		Buffer:  p.buf.Stats(),
		Forward: p.fwd.Stats(),
		Firing:  len(p.an.eng.Firing()),
	}
	if p.an.agg != nil {
		as := p.an.agg.Stats()
		st.Aggregate = &as
	}
	writeJSON(w, st)
}

// serveLatest: GET /api/v1/latest[?device=D][&metric=M], the latest value
// and latest closed window of each size per device and metric.
func (a *Agent) serveLatest(w http.ResponseWriter, r *http.Request) {
	p := a.live.Load()
	if p == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, Latest{Edge: a.cfg.EdgeID().String(), Series: p.an.latest.snapshot(r.URL.Query().Get("device"), r.URL.Query().Get("metric"))})
}

// serveAlerts: GET /api/v1/alerts, the alerts firing now.
func (a *Agent) serveAlerts(w http.ResponseWriter, _ *http.Request) {
	p := a.live.Load()
	if p == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	firing := p.an.eng.Firing()
	if firing == nil {
		firing = []rules.Alert{}
	}
	writeJSON(w, map[string]any{"edge": a.cfg.EdgeID().String(), "firing": firing})
}

// Reload applies the aggregate and rules sections of cfg to the running
// agent without dropping data. An invalid cfg is refused with the reason
// and the running configuration stays in force. Changes to other sections
// need a restart; they are reported in the log, not applied.
func (a *Agent) Reload(cfg Config) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("reload refused, the running configuration stays: %w", err)
	}
	p := a.live.Load()
	if p == nil {
		return errors.New("reload refused: the agent is not running yet")
	}
	if err := p.an.reconfigure(cfg); err != nil {
		return fmt.Errorf("reload refused, the running configuration stays: %w", err)
	}
	rest, old := cfg, a.cfg
	rest.Aggregate, rest.Rules, old.Aggregate, old.Rules = aggregate.Config{}, nil, aggregate.Config{}, nil
	if !reflect.DeepEqual(rest, old) {
		a.log.Warn("reload: only aggregate and rules apply now; restart the agent to apply the other changed settings")
	}
	a.cfg.Aggregate, a.cfg.Rules = cfg.Aggregate, cfg.Rules
	a.log.Info("configuration reloaded", "windows", cfg.windows(), "rules", len(cfg.Rules))
	return nil
}
