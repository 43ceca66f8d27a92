// Package hub is the cloud's NATS hub: an embedded JetStream server that
// regional gateways join as leaf nodes, and a global stream that sources
// each region's TELEMETRY stream across JetStream domains. What a region
// sends is its residency setting: raw readings and aggregates, aggregates
// only, or nothing.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

// Residency: what of a region's telemetry may leave the region.
const (
	ExportRaw        = "raw"        // raw readings and aggregates
	ExportAggregates = "aggregates" // only telemetry.<region>.*.*.agg
	ExportNone       = "none"       // nothing
)

// RegionalStream is the name of every region's telemetry stream.
const RegionalStream = "TELEMETRY"

// Region is one region the hub gathers from.
type Region struct {
	Name   string `yaml:"name" help:"region name: its JetStream domain and subject token"`
	Export string `yaml:"export" help:"what leaves the region: raw (readings and aggregates), aggregates (only .agg subjects), none"`
}

// TLSConfig secures the leaf node listener.
type TLSConfig struct {
	CertFile      string `yaml:"cert_file" help:"PEM certificate of the leaf node listener; set = TLS required"`
	KeyFile       string `yaml:"key_file" help:"PEM key of cert_file"`
	CAFile        string `yaml:"ca_file" help:"PEM CAs that sign the gateways' client certificates (for verify_clients)"`
	VerifyClients bool   `yaml:"verify_clients" help:"mutual TLS: refuse gateways without a certificate signed by ca_file"`
}

// Config is the YAML section "hub".
type Config struct {
	Enabled    bool          `yaml:"enabled" help:"run the embedded hub; false = nats.url points at a hub that exists"`
	Domain     string        `yaml:"domain" help:"JetStream domain of the hub"`
	Listen     string        `yaml:"listen" help:"host:port of the hub's client listener (the lake writer, operators)"`
	LeafListen string        `yaml:"leaf_listen" help:"host:port that regional gateways connect to as leaf nodes"`
	LeafTLS    TLSConfig     `yaml:"leaf_tls"`
	StoreDir   string        `yaml:"store_dir" help:"directory of the hub's JetStream store"`
	Stream     string        `yaml:"stream" help:"name of the global stream"`
	Duplicates time.Duration `yaml:"duplicates" help:"dedup window of the global stream; re-sourced batches inside it are stored once"`
	MaxAge     time.Duration `yaml:"max_age" help:"how long the global stream keeps messages; 0 = forever"`
	Regions    []Region      `yaml:"regions" help:"regions sourced into the global stream, each with its residency"`
}

// DefaultConfig returns the defaults: disabled.
func DefaultConfig() Config {
	return Config{
		Domain: "hub", Listen: "127.0.0.1:4232", LeafListen: "127.0.0.1:7422", StoreDir: ".updraft/hub",
		Stream: "GLOBAL", Duplicates: 10 * time.Minute, MaxAge: 7 * 24 * time.Hour,
	}
}

// Validate reports the first bad setting, naming its YAML key under "hub.".
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	for _, f := range []struct{ key, v string }{{"hub.domain", c.Domain}, {"hub.stream", c.Stream}} {
		if err := schemas.ValidateToken(f.key, f.v); err != nil {
			return config.Invalid(f.key, f.v, "a name without dots, spaces or wildcards")
		}
	}
	for _, f := range []struct{ key, v string }{{"hub.listen", c.Listen}, {"hub.leaf_listen", c.LeafListen}} {
		if !validHostPort(f.v) {
			return config.Invalid(f.key, f.v, "host:port, e.g. 0.0.0.0:7422 (port 0 = any free port)")
		}
	}
	if c.StoreDir == "" {
		return config.Invalid("hub.store_dir", c.StoreDir, "a directory path")
	}
	if c.Duplicates <= 0 {
		return config.Invalid("hub.duplicates", c.Duplicates, "a positive duration such as 10m")
	}
	if c.MaxAge < 0 || (c.MaxAge > 0 && c.MaxAge < c.Duplicates) {
		return config.Invalid("hub.max_age", c.MaxAge, "0 (forever) or at least hub.duplicates")
	}
	t := c.LeafTLS
	switch {
	case t.CertFile == "" && (t.KeyFile != "" || t.CAFile != "" || t.VerifyClients):
		return config.Invalid("hub.leaf_tls.cert_file", t.CertFile, "a PEM certificate when other hub.leaf_tls settings are set")
	case t.CertFile != "" && t.KeyFile == "":
		return config.Invalid("hub.leaf_tls.key_file", t.KeyFile, "the PEM key of hub.leaf_tls.cert_file")
	case t.VerifyClients && t.CAFile == "":
		return config.Invalid("hub.leaf_tls.ca_file", t.CAFile, "the CAs of the gateways' certificates when verify_clients is true")
	}
	seen := map[string]bool{}
	for i, r := range c.Regions {
		key := fmt.Sprintf("hub.regions[%d]", i)
		if err := schemas.ValidateToken("region", r.Name); err != nil || r.Name == c.Domain {
			return config.Invalid(key+".name", r.Name, "a region name without dots, spaces or wildcards, not the hub's domain")
		}
		if seen[r.Name] {
			return config.Invalid(key+".name", r.Name, "a region not listed twice")
		}
		seen[r.Name] = true
		if !slices.Contains([]string{ExportRaw, ExportAggregates, ExportNone}, r.Export) {
			return config.Invalid(key+".export", r.Export, "raw, aggregates or none")
		}
	}
	return nil
}

func validHostPort(addr string) bool {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// Sources are the stream sources of the global stream: one per region that
// exports, filtered by its residency.
func (c Config) Sources() []*jetstream.StreamSource {
	var out []*jetstream.StreamSource
	for _, r := range c.Regions {
		var filter string
		switch r.Export {
		case ExportRaw:
			filter = "telemetry." + r.Name + ".>"
		case ExportAggregates:
			filter = "telemetry." + r.Name + ".*.*." + schemas.KindAgg
		default:
			continue
		}
		out = append(out, &jetstream.StreamSource{Name: RegionalStream, Domain: r.Name, FilterSubject: filter})
	}
	return out
}

// StreamConfig is the global stream: no subjects of its own, only sources.
func (c Config) StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "updraft: telemetry the regions export, sourced across JetStream domains",
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      c.MaxAge,
		Duplicates:  c.Duplicates,
		Sources:     c.Sources(),
	}
}

// Hub is a running embedded hub.
type Hub struct {
	cfg Config
	log *slog.Logger
	srv atomic.Pointer[server.Server]
	// ready is closed once the global stream is reconciled.
	ready chan struct{}
}

// New returns a hub for cfg, which must be enabled. log may be nil.
func New(cfg Config, log *slog.Logger) (*Hub, error) {
	if !cfg.Enabled {
		return nil, errors.New("hub: not enabled")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{cfg: cfg, log: log, ready: make(chan struct{})}, nil
}

func (h *Hub) options() (*server.Options, error) {
	host, port, err := splitHostPort(h.cfg.Listen)
	if err != nil {
		return nil, err
	}
	lhost, lport, err := splitHostPort(h.cfg.LeafListen)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "updraft-hub", Host: host, Port: port, JetStream: true, JetStreamDomain: h.cfg.Domain,
		StoreDir: h.cfg.StoreDir, NoSigs: true, NoLog: true,
	}
	opts.LeafNode.Host, opts.LeafNode.Port = lhost, lport
	if t := h.cfg.LeafTLS; t.CertFile != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.CertFile, KeyFile: t.KeyFile, CaFile: t.CAFile, Verify: t.VerifyClients})
		if err != nil {
			return nil, fmt.Errorf("hub.leaf_tls: %w", err)
		}
		opts.LeafNode.TLSConfig = tc
		opts.LeafNode.TLSTimeout = 2
	}
	return opts, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Run starts the hub, reconciles the global stream and serves until ctx
// ends; it then shuts the server down and waits for it.
func (h *Hub) Run(ctx context.Context) error {
	opts, err := h.options()
	if err != nil {
		return err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("configure hub: %w", err)
	}
	srv.Start()
	defer func() {
		h.srv.Store(nil)
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		if ctx.Err() != nil {
			return nil
		}
	}
	h.srv.Store(srv)
	if err := h.reconcile(ctx, srv); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	close(h.ready)
	h.log.Info("hub ready", "domain", h.cfg.Domain, "nats", srv.ClientURL(), "stream", h.cfg.Stream,
		"sources", len(h.cfg.Sources()))
	<-ctx.Done()
	return nil
}

func (h *Hub) reconcile(ctx context.Context, srv *server.Server) error {
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("updraft-hub-reconcile"))
	if err != nil {
		return fmt.Errorf("connect to the hub: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(rctx, h.cfg.StreamConfig()); err != nil {
		return fmt.Errorf("reconcile global stream %s: %w", h.cfg.Stream, err)
	}
	for _, r := range h.cfg.Regions {
		h.log.Info("region residency", "region", r.Name, "export", r.Export)
	}
	return nil
}

// Ready is closed once the global stream exists as configured.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// ClientURL is the hub's client URL, "" while it is not running.
func (h *Hub) ClientURL() string {
	if s := h.srv.Load(); s != nil {
		return s.ClientURL()
	}
	return ""
}

// LeafURL is the nats-leaf:// URL gateways connect to, "" while not running.
func (h *Hub) LeafURL() string {
	s := h.srv.Load()
	if s == nil {
		return ""
	}
	v, err := s.Varz(nil)
	if err != nil || v.LeafNode.Port <= 0 {
		return ""
	}
	scheme := "nats-leaf://"
	if h.cfg.LeafTLS.CertFile != "" {
		scheme = "tls://"
	}
	return scheme + net.JoinHostPort(v.LeafNode.Host, strconv.Itoa(v.LeafNode.Port))
}
