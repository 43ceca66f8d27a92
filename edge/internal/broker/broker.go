// Package broker runs the MQTT broker embedded in the edge agent, so a site
// needs no separate broker: devices publish to the agent's own port.
//
// Sessions, queued QoS 1/2 messages of disconnected persistent sessions
// (CleanSession=false) and retained messages live in memory only: they
// survive a client reconnecting but not a restart of the agent. Nothing
// acknowledged to a device is lost that way as long as the agent's own
// client acknowledges a message only once its readings are durable: what a
// restart drops was never acknowledged, and QoS 1 devices send it again.
package broker

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/updraft-io/updraft/schemas/config"
)

// User is one MQTT client login.
type User struct {
	Username string `yaml:"username" help:"MQTT username"`
	Password string `yaml:"password" help:"MQTT password"`
}

// Config configures the embedded broker.
type Config struct {
	Enabled bool   `yaml:"enabled" help:"run the embedded MQTT broker (turn off to use an external one)"`
	Listen  string `yaml:"listen" help:"TCP address MQTT clients connect to"`
	// Users, when set, are the only logins accepted; when empty every
	// client may connect, which suits a broker bound to loopback or an
	// isolated device network.
	Users          []User          `yaml:"users" help:"accepted username/password pairs; empty allows every client"`
	MaxPacketBytes config.ByteSize `yaml:"max_packet_bytes" help:"larger MQTT packets close the client's connection"`
	// MaxInflight bounds the QoS 1/2 messages the broker holds for one
	// subscriber that has not acknowledged them. The broker has already
	// acknowledged those messages to their publishers, and MQTT 3.1.1 gives
	// it no way to push back on them, so beyond this bound it must drop:
	// each drop is counted (Dropped, updraft_edge_broker_dropped_total).
	MaxInflight int `yaml:"max_inflight" help:"QoS 1 messages held per subscriber awaiting its ack; beyond it new ones are dropped and counted (1 to 65535)"`
}

// DefaultConfig listens on the local stack's MQTT port, loopback only.
func DefaultConfig() Config {
	return Config{Enabled: true, Listen: "127.0.0.1:1883", MaxPacketBytes: 1 << 20, MaxInflight: 65535}
}

const keyPrefix = "broker."

// Validate checks the configuration; errors name the YAML key under the
// agent's "broker" section.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return config.Invalid(keyPrefix+"listen", c.Listen, "host:port, e.g. 127.0.0.1:1883 or :1883")
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		key := fmt.Sprintf("%susers[%d].", keyPrefix, i)
		switch {
		case u.Username == "":
			return config.Invalid(key+"username", u.Username, "a non-empty username")
		case seen[u.Username]:
			return config.Invalid(key+"username", u.Username, "a username not listed before")
		case u.Password == "":
			return config.Invalid(key+"password", "", "a non-empty password")
		}
		seen[u.Username] = true
	}
	if c.MaxInflight < 1 || c.MaxInflight > 65535 {
		return config.Invalid(keyPrefix+"max_inflight", c.MaxInflight, "1 to 65535")
	}
	if c.MaxPacketBytes < 1<<10 || c.MaxPacketBytes > 256<<20 {
		return config.Invalid(keyPrefix+"max_packet_bytes", c.MaxPacketBytes, "1KiB to 256MiB")
	}
	return nil
}

// Dropped is how many QoS 1/2 messages the broker dropped because a
// subscriber had MaxInflight unacknowledged messages.
func (b *Broker) Dropped() int64 {
	if b.srv == nil {
		return 0
	}
	return atomic.LoadInt64(&b.srv.Info.InflightDropped)
}

// dropFilter turns mochi's per-message drop warnings into one summary line
// per interval.
type dropFilter struct {
	slog.Handler
	every time.Duration
	mu    sync.Mutex
	last  time.Time
	n     int
}

func (f *dropFilter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "client store quota reached" && r.Message != "packet ids exhausted" {
		return f.Handler.Handle(ctx, r)
	}
	f.mu.Lock()
	f.n++
	if time.Since(f.last) < f.every {
		f.mu.Unlock()
		return nil
	}
	n := f.n
	f.n, f.last = 0, time.Now()
	f.mu.Unlock()
	out := slog.NewRecord(r.Time, slog.LevelWarn, "mqtt broker dropping messages: a subscriber has too many unacknowledged QoS 1 messages (see updraft_edge_broker_dropped_total)", 0)
	out.AddAttrs(slog.Int("dropped_since_last_report", n))
	return f.Handler.Handle(ctx, out)
}

func (f *dropFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return &dropFilter{Handler: f.Handler.WithAttrs(as), every: f.every}
}

func (f *dropFilter) WithGroup(name string) slog.Handler {
	return &dropFilter{Handler: f.Handler.WithGroup(name), every: f.every}
}

// Broker is the embedded MQTT broker.
type Broker struct {
	cfg Config
	log *slog.Logger
	srv *mqtt.Server
	tcp *listeners.TCP

	listenOnce sync.Once
	listenErr  error
	closeOnce  sync.Once
}

// New builds the broker; it does not listen yet. log may be nil.
func New(cfg Config, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Broker{cfg: cfg, log: log}
	if !cfg.Enabled {
		return b, nil
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MaxPacketBytes)
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	// The broker logs a warning for every message it drops; under overload
	// that is one line per message. Drops are counted instead (Dropped) and
	// reported at most every 10 s.
	quiet := slog.New(&dropFilter{Handler: log.Handler(), every: 10 * time.Second})
	b.srv = mqtt.New(&mqtt.Options{Capabilities: caps, Logger: quiet, InlineClient: false})
	users := make(map[string][]byte, len(cfg.Users))
	for _, u := range cfg.Users {
		users[u.Username] = []byte(u.Password)
	}
	if err := b.srv.AddHook(&authHook{users: users}, nil); err != nil {
		return nil, fmt.Errorf("new mqtt broker: %w", err)
	}
	return b, nil
}

// Listen binds the listen address now, so a caller learns the port of
// ":0" from Addr before Run and a taken port fails at start. Run calls it
// if the caller did not.
func (b *Broker) Listen() error {
	if !b.cfg.Enabled {
		return nil
	}
	b.listenOnce.Do(func() {
		b.tcp = listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "tcp", Address: b.cfg.Listen})
		if err := b.srv.AddListener(b.tcp); err != nil {
			b.listenErr = fmt.Errorf("listen mqtt %s: %w", b.cfg.Listen, err)
		}
	})
	return b.listenErr
}

// Addr is the address clients connect to, once Listen has succeeded; ""
// before that or when the broker is disabled.
func (b *Broker) Addr() string {
	if b.tcp == nil || b.listenErr != nil {
		return ""
	}
	return b.tcp.Address()
}

// Run serves MQTT clients until ctx ends, then disconnects them and waits
// for their goroutines. A disabled broker just waits for ctx, so it fits any
// group of components.
func (b *Broker) Run(ctx context.Context) error {
	if !b.cfg.Enabled {
		<-ctx.Done()
		return nil
	}
	if err := b.Listen(); err != nil {
		return err
	}
	if err := b.srv.Serve(); err != nil {
		b.close()
		return fmt.Errorf("serve mqtt: %w", err)
	}
	b.log.Info("mqtt broker listening", "addr", b.Addr(), "users", len(b.cfg.Users))
	<-ctx.Done()
	b.close()
	return nil
}

func (b *Broker) close() {
	b.closeOnce.Do(func() { _ = CloseServer(b.srv) })
}

// CloseServer shuts a mochi server down: it disconnects every client, waits
// for their goroutines, and stops the hooks. mochi's own Close can deadlock
// (mochi-mqtt/server#488): it read-locks the client list twice, and a client
// leaving in between asks for the write lock. Closing the listeners first,
// with a closer that locks once, leaves Close no client to look for.
func CloseServer(srv *mqtt.Server) error {
	srv.Listeners.CloseAll(func(listener string) {
		for _, cl := range srv.Clients.GetAll() {
			if cl.Net.Listener == listener && !cl.Closed() {
				_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	})
	return srv.Close()
}

// authHook accepts everyone when no users are configured, else only the
// listed logins. Passwords compare in constant time; mochi's own ledger
// treats "*" in a password as a wildcard, which a password must never be.
type authHook struct {
	mqtt.HookBase
	users map[string][]byte
}

func (h *authHook) ID() string { return "updraft-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *authHook) OnConnectAuthenticate(_ *mqtt.Client, pk packets.Packet) bool {
	if len(h.users) == 0 {
		return true
	}
	want, ok := h.users[string(pk.Connect.Username)]
	if !ok {
		return false
	}
	return subtle.ConstantTimeCompare(want, pk.Connect.Password) == 1
}

// OnACLCheck allows every topic: a login is trusted on the whole broker.
func (h *authHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
