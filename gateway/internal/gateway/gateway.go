// Package gateway is the regional tier of Updraft: it runs the region's NATS
// server with JetStream (one JetStream domain per region), keeps the regional
// streams as configured, and serves the ops endpoints and a status API.
//
// Durability: JetStream acknowledges a message once it is written, and by
// default NATS fsyncs the store only every two minutes. An edge deletes a
// batch from its buffer as soon as the gateway acknowledges it, so a power
// loss at the gateway would lose those batches for good. The default
// jetstream.sync_interval is therefore "always" (every message is on disk
// before its ack). Edges publish batches of many readings, so the cost is per
// batch, not per reading; BenchmarkPublish measures it.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/updraft-io/updraft/gateway/internal/natsserver"
	"github.com/updraft-io/updraft/gateway/internal/streams"
	"github.com/updraft-io/updraft/schemas/config"
	"github.com/updraft-io/updraft/schemas/ops"
)

// reconcileTimeout bounds the stream reconciliation at start; it talks to
// the in-process server, so anything slower means the server is stuck.
const reconcileTimeout = 30 * time.Second

// clusterAttemptTimeout bounds one reconciliation attempt of a cluster node;
// before the meta leader is elected requests hang, so attempts are short
// and repeated.
const clusterAttemptTimeout = 3 * time.Second

// globalAccount is where clients without credentials, and so all Updraft
// streams, live.
const globalAccount = "$G"

// Gateway is one region's gateway.
type Gateway struct {
	cfg  Config
	log  *slog.Logger
	reg  *prometheus.Registry
	http *ops.Server

	started    atomic.Bool
	srv        atomic.Pointer[server.Server]
	violations natsserver.Violations
	// internal is the credential of the gateway's own in-process
	// connection when clients must authenticate.
	internal   natsserver.User
	reconciled atomic.Bool
	ready      chan struct{}
}

// New validates cfg and prepares a gateway; Run starts it. The gateway owns
// the Prometheus registry that its /metrics serves.
func New(cfg Config, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{cfg: cfg, log: log, reg: ops.NewRegistry(), ready: make(chan struct{})}
	g.internal = natsserver.User{Name: "updraft-gateway-internal", Password: rand.Text()}
	g.reg.MustRegister(
		natsserver.NewCollector(g.srv.Load),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "updraft_gateway_publish_violations_total",
			Help: "Publishes refused because the client (an edge) may not publish to that subject.",
		}, func() float64 { return float64(g.violations.Publish.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "updraft_gateway_subscribe_violations_total",
			Help: "Subscriptions refused because the client may not subscribe to that subject.",
		}, func() float64 { return float64(g.violations.Subscribe.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "updraft_gateway_auth_failures_total",
			Help: "Connections refused for missing or wrong credentials.",
		}, func() float64 { return float64(g.violations.Auth.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "updraft_gateway_ready",
			Help: "1 when the server accepts clients, JetStream is enabled and the streams are reconciled.",
		}, func() float64 {
			if g.checkReady() != nil {
				return 0
			}
			return 1
		}),
	)
	g.http = &ops.Server{
		Addr:     cfg.HTTP.Addr,
		Registry: g.reg,
		Ready:    g.checkReady,
		Handlers: map[string]http.Handler{"GET /api/v1/status": http.HandlerFunc(g.serveStatus)},
		Log:      log,
	}
	return g, nil
}

// Run starts the NATS server, reconciles the streams and serves HTTP until
// ctx ends, then shuts everything down and waits for it. It returns nil
// after a shutdown asked for by ctx.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice")
	}
	if err := os.MkdirAll(g.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	// Bind HTTP first: /healthz answers while a large store is recovered.
	if err := g.http.Listen(); err != nil {
		return err
	}
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.http.Run(ctx) })
	eg.Go(func() error { return g.runServer(ctx) })
	return eg.Wait()
}

// natsServerConfig is the configuration of the embedded server, with the
// gateway's own internal user when clients must authenticate.
func (g *Gateway) natsServerConfig() natsserver.Config {
	nc := g.cfg.NATSServer()
	nc.Violations = &g.violations
	if len(nc.Users) > 0 {
		nc.Users = append(nc.Users, g.internal)
	}
	return nc
}

func (g *Gateway) runServer(ctx context.Context) error {
	nc := g.natsServerConfig()
	srv, err := natsserver.Start(ctx, nc, g.log.With("subsystem", "nats"))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	g.srv.Store(srv)
	defer func() {
		g.srv.Store(nil)
		srv.Shutdown()
		srv.WaitForShutdown()
		g.log.Info("nats server stopped")
	}()
	results, err := g.reconcile(ctx, srv)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	g.reconciled.Store(true)
	close(g.ready)
	changed := 0
	for _, r := range results {
		if r.Action != streams.Unchanged {
			changed++
		}
	}
	g.log.Info("gateway ready", "region", g.cfg.Region, "server_name", nc.ServerName, "nats", srv.ClientURL(),
		"http", g.http.URL(), "streams", len(results), "streams_changed", changed, "sync", nc.Sync.String())
	<-ctx.Done()
	return nil
}

// reconcile talks to the server over an in-process connection: no port, no
// credentials, and it works before any listener is reachable from outside.
func (g *Gateway) reconcile(ctx context.Context, srv *server.Server) ([]streams.Result, error) {
	opts := []nats.Option{nats.InProcessServer(srv), nats.Name("updraft-gateway-reconcile")}
	if len(g.cfg.Auth.Edges)+len(g.cfg.Auth.Services) > 0 {
		opts = append(opts, nats.UserInfo(g.internal.Name, g.internal.Password))
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to the embedded nats server: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream client: %w", err)
	}
	log := g.log.With("subsystem", "streams")
	if !g.cfg.NATSServer().Cluster.Clustered() {
		ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
		defer cancel()
		return streams.Reconcile(ctx, js, g.cfg.Specs(), log)
	}
	// A cluster node can change streams only once a quorum of nodes has
	// elected a JetStream meta leader; the other nodes may start later, so
	// wait for them as long as it takes, saying so.
	for attempt, backoff := 1, 250*time.Millisecond; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, clusterAttemptTimeout)
		res, err := streams.Reconcile(actx, js, g.cfg.Specs(), log)
		cancel()
		if err == nil || errors.Is(err, streams.ErrImmutable) {
			return res, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		g.log.Warn("waiting for a quorum of the cluster to reconcile the streams", "cluster", g.cfg.clusterOptions().Name,
			"routes", g.cfg.Cluster.Routes, "attempt", attempt, "retry_in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Ready is closed once the streams are reconciled and the gateway serves.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// checkReady is /readyz: the server accepts clients, JetStream is enabled
// and the streams match the configuration.
func (g *Gateway) checkReady() error {
	srv := g.srv.Load()
	switch {
	case srv == nil:
		return errors.New("nats server not running")
	case !srv.Running():
		return errors.New("nats server shutting down")
	case !srv.JetStreamEnabled():
		return errors.New("jetstream disabled")
	case !g.reconciled.Load():
		return errors.New("streams not reconciled yet")
	}
	return nil
}

// ClientURL is the NATS URL clients use, "" while the server is not running.
func (g *Gateway) ClientURL() string {
	if srv := g.srv.Load(); srv != nil {
		return srv.ClientURL()
	}
	return ""
}

// MonitorURL is the base URL of the NATS monitoring endpoints, "" when off
// or not running.
func (g *Gateway) MonitorURL() string {
	if srv := g.srv.Load(); srv != nil {
		if a := srv.MonitorAddr(); a != nil {
			return "http://" + a.String()
		}
	}
	return ""
}

// HTTPURL is the base URL of the ops endpoints once Run has bound them.
func (g *Gateway) HTTPURL() string { return g.http.URL() }

// Status is the body of GET /api/v1/status.
type Status struct {
	Region      string `json:"region"`
	ServerName  string `json:"server_name"`
	Domain      string `json:"domain"`
	Version     string `json:"version"`
	NATSVersion string `json:"nats_version"`
	ClientURL   string `json:"client_url,omitempty"`
	Ready       bool   `json:"ready"`
	// NotReady says why Ready is false.
	NotReady    string `json:"not_ready,omitempty"`
	Sync        string `json:"sync_interval"`
	Connections int    `json:"connections"`
	// Streams is keyed by stream name (prefixed with "<account>/" outside
	// the global account), so that .streams.TELEMETRY.messages finds the
	// telemetry backlog.
	Streams map[string]natsserver.StreamState `json:"streams"`
}

// Status reports the gateway and every stream it holds.
func (g *Gateway) Status() (Status, error) {
	nc := g.cfg.NATSServer()
	st := Status{
		Region:      g.cfg.Region,
		ServerName:  nc.ServerName,
		Domain:      nc.Domain,
		Version:     config.VersionString(),
		NATSVersion: server.VERSION,
		Sync:        nc.Sync.String(),
		Streams:     map[string]natsserver.StreamState{},
	}
	if err := g.checkReady(); err != nil {
		st.NotReady = err.Error()
	} else {
		st.Ready = true
	}
	srv := g.srv.Load()
	if srv == nil {
		return st, nil
	}
	st.ClientURL = srv.ClientURL()
	st.Connections = srv.NumClients()
	ss, err := natsserver.Streams(srv)
	if err != nil {
		return st, err
	}
	for _, s := range ss {
		key := s.Name
		if s.Account != globalAccount {
			key = s.Account + "/" + s.Name
		}
		st.Streams[key] = s
	}
	return st, nil
}

func (g *Gateway) serveStatus(w http.ResponseWriter, _ *http.Request) {
	st, err := g.Status()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(st)
}
