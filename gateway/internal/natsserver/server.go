// Package natsserver embeds the NATS server with JetStream that a gateway runs
// for its region: it turns Updraft settings into server options, starts the
// server with its logs in slog, and exposes the server's own state as
// Prometheus metrics and per-stream figures.
package natsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config is what the embedded server needs. Addresses are host:port; a port
// of 0 picks a free port.
type Config struct {
	ServerName string
	// Domain is the JetStream domain; Updraft uses one domain per region so
	// that regions stay separate even when their servers are linked.
	Domain string
	Listen string
	// Monitor is the address of the NATS monitoring endpoints (/varz, /jsz);
	// "" turns them off.
	Monitor    string
	StoreDir   string
	MaxPayload int32
	// MaxMemory and MaxFile bound JetStream's memory and file storage; 0
	// leaves the server's defaults (75% of RAM, 1 TB or 75% of the disk).
	MaxMemory int64
	MaxFile   int64
	Sync      SyncInterval
	// Cluster joins the server to the other servers of its region with
	// routes; the zero value runs it alone.
	Cluster Cluster
	// TLS secures the client listener; Users, when not empty, are the only
	// identities accepted on it.
	TLS   TLS
	Users []User
	// Violations, when set, counts refused publishes, subscriptions and
	// logins.
	Violations *Violations
	// Leaf, when its URL is set, joins the server to the cloud hub as a leaf
	// node.
	Leaf Leaf
}

// Leaf is the server's connection to the cloud hub.
type Leaf struct {
	URL                       string // nats-leaf://host:port or tls://host:port
	CAFile, CertFile, KeyFile string
	User, Password            string
	// DenyExports are subjects never sent to the hub, whatever it asks for.
	DenyExports []string
}

// Cluster is how a server joins the other servers of its region. Every
// server of a cluster has the same Name and a unique ServerName; JetStream
// then replicates streams among them with Raft.
type Cluster struct {
	Name string
	// Listen is the host:port other servers' routes connect to; "" means
	// the server is not clustered.
	Listen string
	// Routes are nats-route://host:port URLs of the cluster's servers (a
	// server may list itself).
	Routes []string
}

// Clustered reports whether the server joins a cluster.
func (c Cluster) Clustered() bool { return c.Listen != "" }

// Options translates cfg into nats-server options.
func (cfg Config) Options() (*server.Options, error) {
	host, port, err := splitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address: %w", err)
	}
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		Host:               host,
		Port:               port,
		MaxPayload:         cfg.MaxPayload,
		JetStream:          true,
		JetStreamDomain:    cfg.Domain,
		StoreDir:           cfg.StoreDir,
		JetStreamMaxMemory: cfg.MaxMemory,
		JetStreamMaxStore:  cfg.MaxFile,
		// The process owns signal handling and shuts the server down itself.
		NoSigs: true,
	}
	if cfg.Monitor != "" {
		opts.HTTPHost, opts.HTTPPort, err = splitHostPort(cfg.Monitor)
		if err != nil {
			return nil, fmt.Errorf("nats monitor address: %w", err)
		}
	}
	if cfg.Cluster.Clustered() {
		opts.Cluster.Name = cfg.Cluster.Name
		opts.Cluster.Host, opts.Cluster.Port, err = splitHostPort(cfg.Cluster.Listen)
		if err != nil {
			return nil, fmt.Errorf("cluster listen address: %w", err)
		}
		for _, r := range cfg.Cluster.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("cluster route %q: want nats-route://host:port", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if cfg.TLS.Enabled() {
		tc, err := cfg.TLS.serverConfig()
		if err != nil {
			return nil, err
		}
		opts.TLSConfig, err = server.GenTLSConfig(tc)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		opts.TLS, opts.TLSVerify = true, cfg.TLS.VerifyClients
		opts.TLSTimeout = 2
	}
	applyUsers(opts, cfg.Users)
	if cfg.Leaf.URL != "" {
		u, err := url.Parse(cfg.Leaf.URL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("leaf url %q: want nats-leaf://host:port or tls://host:port", cfg.Leaf.URL)
		}
		if cfg.Leaf.User != "" {
			u.User = url.UserPassword(cfg.Leaf.User, cfg.Leaf.Password)
		}
		r := &server.RemoteLeafOpts{URLs: []*url.URL{u}, DenyExports: cfg.Leaf.DenyExports}
		if cfg.Leaf.CAFile != "" || cfg.Leaf.CertFile != "" || u.Scheme == "tls" {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CaFile: cfg.Leaf.CAFile, CertFile: cfg.Leaf.CertFile, KeyFile: cfg.Leaf.KeyFile})
			if err != nil {
				return nil, fmt.Errorf("leaf tls: %w", err)
			}
			r.TLS, r.TLSConfig = true, tc
		}
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, r)
	}
	if cfg.Sync.Always() {
		opts.SyncAlways = true
	} else {
		opts.SyncInterval = time.Duration(cfg.Sync)
	}
	return opts, nil
}

// splitHostPort maps port 0 to the server's "random port" value, because
// nats-server reads 0 as "use the default port".
func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q of %q is not a number from 0 to 65535", p, addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Start starts the server and returns once it accepts clients with
// JetStream enabled. Recovering a large store can take a while, so there is
// no fixed timeout: ctx bounds the wait. On error the server is shut down.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*server.Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure nats server: %w", err)
	}
	l := newLogger(log)
	l.violations = cfg.Violations
	srv.SetLoggerV2(l, l.debugEnabled(), false, false)
	srv.Start()
	fail := func(err error) (*server.Server, error) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, err
	}
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		select {
		case err := <-l.fatal:
			return fail(fmt.Errorf("start nats server: %w", err))
		case <-ctx.Done():
			return fail(fmt.Errorf("start nats server: %w", ctx.Err()))
		default:
		}
	}
	select {
	case err := <-l.fatal:
		return fail(fmt.Errorf("start nats server: %w", err))
	default:
	}
	if !srv.JetStreamEnabled() {
		return fail(errors.New("start nats server: jetstream is not enabled"))
	}
	return srv, nil
}
