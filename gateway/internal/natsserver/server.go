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
}

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
