// Package server is the updraft-cloud process: it composes the lake writer,
// the JetStream ingester and the HTTP API (status, queries, health and
// metrics) under one configuration and one Run.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/updraft-io/updraft/cloud/internal/hub"
	"github.com/updraft-io/updraft/cloud/internal/ingest"
	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/cloud/internal/query"
	"github.com/updraft-io/updraft/schemas/config"
	"github.com/updraft-io/updraft/schemas/ops"
)

// HTTPConfig is the YAML section "http".
type HTTPConfig struct {
	Addr string `yaml:"addr" help:"listen address of the HTTP API, /metrics, /healthz and /readyz"`
}

// Config is the whole updraft-cloud configuration file.
type Config struct {
	Region string            `yaml:"region" help:"region whose TELEMETRY stream this process writes to the lake"`
	NATS   ingest.NATSConfig `yaml:"nats"`
	Lake   lake.Config       `yaml:"lake"`
	HTTP   HTTPConfig        `yaml:"http"`
	// Hub, when enabled, is embedded: regions join it as leaf nodes and the
	// lake is written from its global stream (all exported regions) instead
	// of one region's stream.
	Hub hub.Config `yaml:"hub"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Region: ingest.DefaultConfig().Region,
		NATS:   ingest.DefaultNATSConfig(),
		Lake:   lake.DefaultConfig(),
		HTTP:   HTTPConfig{Addr: "127.0.0.1:7430"},
		Hub:    hub.DefaultConfig(),
	}
}

// Validate reports the first bad setting, naming its YAML key.
func (c Config) Validate() error {
	if err := c.ingest().Validate(); err != nil {
		return err
	}
	if err := c.Lake.Validate(); err != nil {
		return err
	}
	if err := c.Hub.Validate(); err != nil {
		return err
	}
	if c.Hub.Enabled {
		if _, p, _ := net.SplitHostPort(c.Hub.Listen); p == "0" {
			return config.Invalid("hub.listen", c.Hub.Listen, "a fixed port: the lake writer connects to it")
		}
	}
	if c.NATS.AckWait != 0 && c.NATS.AckWait <= c.Lake.RollInterval {
		return config.Invalid("nats.ack_wait", c.NATS.AckWait, "0 (derived) or longer than lake.roll_interval ("+c.Lake.RollInterval.String()+")")
	}
	host, port, err := net.SplitHostPort(c.HTTP.Addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 || (host != "" && net.ParseIP(host) == nil && host != "localhost") {
		return config.Invalid("http.addr", c.HTTP.Addr, "host:port, e.g. 127.0.0.1:7430 or :7430")
	}
	return nil
}

func (c Config) ingest() ingest.Config {
	if !c.Hub.Enabled {
		return ingest.Config{Region: c.Region, NATS: c.NATS}
	}
	// The writer reads the embedded hub's global stream: every exported
	// region, in the hub's own JetStream domain.
	n := c.NATS
	n.URL, n.Domain = "nats://"+c.Hub.Listen, ""
	n.Creds, n.User, n.Password, n.CAFile, n.CertFile, n.KeyFile = "", "", "", "", "", ""
	return ingest.Config{Region: ingest.AllRegions, StreamName: c.Hub.Stream, NATS: n}
}

// Server is a configured updraft-cloud ready to Run.
type Server struct {
	cfg   Config
	log   *slog.Logger
	w     *lake.Writer
	in    *ingest.Ingester
	hub   *hub.Hub
	http  *ops.Server
	close sync.Once
	ran   bool
}

// New opens (and recovers) the lake and binds the HTTP address, so both
// fail here rather than in Run. reg receives the metrics and is served on
// /metrics; nil means a fresh registry. Call Run, or Close if Run is never
// called.
func New(cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = ops.NewRegistry()
	}
	w, err := lake.Open(cfg.Lake, log.With("part", "lake"))
	if err != nil {
		return nil, err
	}
	in, err := ingest.New(cfg.ingest(), w, log.With("part", "ingest"), reg)
	if err != nil {
		w.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, w: w, in: in}
	if cfg.Hub.Enabled {
		if s.hub, err = hub.New(cfg.Hub, log.With("part", "hub")); err != nil {
			w.Close()
			return nil, err
		}
	}
	q := query.New(w.Dir()) // one engine, so queries and series share its footer cache
	s.http = &ops.Server{
		Addr: cfg.HTTP.Addr, Registry: reg, Ready: in.Ready, Log: log,
		Handlers: map[string]http.Handler{
			"GET /api/v1/status": http.HandlerFunc(s.status),
			"GET /api/v1/query":  q.Handler(log.With("part", "query")),
			"GET /api/v1/series": q.SeriesHandler(log.With("part", "query")),
		},
	}
	if err := s.http.Listen(); err != nil {
		w.Close()
		return nil, err
	}
	return s, nil
}

// URL is the HTTP API's base URL.
func (s *Server) URL() string { return s.http.URL() }

// Run serves and ingests until ctx ends or the lake fails, then flushes,
// acknowledges and releases everything.
func (s *Server) Run(ctx context.Context) error {
	s.ran = true
	defer s.Close()
	s.log.Info("starting", "region", s.cfg.Region, "nats", s.cfg.NATS.URL, "lake", s.w.Dir(), "http", s.URL())
	g, gctx := errgroup.WithContext(ctx)
	if s.hub != nil {
		g.Go(func() error { return s.hub.Run(gctx) })
	}
	g.Go(func() error { return s.in.Run(gctx) })
	g.Go(func() error { return s.http.Run(gctx) })
	err := g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("updraft-cloud: %w", err)
	}
	s.log.Info("stopped", "rows_committed", s.w.Totals().Rows)
	return nil
}

// Close releases the lake and the listener; Run calls it on return.
func (s *Server) Close() error {
	var err error
	s.close.Do(func() {
		if !s.ran {
			// ops.Server closes its listener only at the end of Run; a
			// cancelled Run returns at once.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err = s.http.Run(ctx)
		}
		err = errors.Join(err, s.w.Close())
	})
	return err
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.in.Status())
}
