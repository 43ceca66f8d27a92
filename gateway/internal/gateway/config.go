package gateway

import (
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/gateway/internal/natsserver"
	"github.com/updraft-io/updraft/gateway/internal/streams"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

// Config is the gateway's configuration, read from YAML by config.Main.
type Config struct {
	Region     string          `yaml:"region" help:"region this gateway serves: its JetStream domain and the second token of its stream subjects"`
	ServerName string          `yaml:"server_name" help:"NATS server name, unique among linked servers; empty = gw-<region>-1"`
	DataDir    string          `yaml:"data_dir" help:"directory of the JetStream file store"`
	NATS       NATSConfig      `yaml:"nats"`
	JetStream  JetStreamConfig `yaml:"jetstream"`
	Streams    StreamsConfig   `yaml:"streams"`
	HTTP       HTTPConfig      `yaml:"http"`
}

// NATSConfig holds the NATS listeners.
type NATSConfig struct {
	Listen     string          `yaml:"listen" help:"host:port that edges and the cloud connect to (port 0 = any free port)"`
	Monitor    string          `yaml:"monitor" help:"host:port of the NATS monitoring endpoints /varz, /jsz, /healthz; empty = off"`
	MaxPayload config.ByteSize `yaml:"max_payload" help:"largest message the server accepts; every edge batch must fit (at most 64MiB)"`
}

// JetStreamConfig holds the limits and durability of the JetStream store.
type JetStreamConfig struct {
	MaxMemory config.ByteSize `yaml:"max_memory" help:"memory JetStream may use for memory streams and caches; 0 = 75% of RAM"`
	MaxFile   config.ByteSize `yaml:"max_file" help:"disk JetStream may use under data_dir; 0 = 75% of the free disk"`
	// NATS's own default is 2m: a power loss can lose up to two minutes of
	// acknowledged messages, which the edge has already deleted from its
	// buffer. "always" keeps the edge's no-loss promise; see the package doc.
	SyncInterval natsserver.SyncInterval `yaml:"sync_interval" help:"how often the store is fsynced: always (every message before its ack; no loss on power failure) or a duration (NATS's own default is 2m; acked data newer than that is lost on power failure)"`
}

// StreamsConfig declares the regional streams.
type StreamsConfig struct {
	Telemetry  StreamConfig `yaml:"telemetry"`
	Events     StreamConfig `yaml:"events"`
	DeadLetter StreamConfig `yaml:"deadletter"`
}

// StreamConfig is one stream's name and limits.
type StreamConfig struct {
	Name       string          `yaml:"name" help:"stream name"`
	MaxAge     time.Duration   `yaml:"max_age" help:"messages older than this are deleted; 0 = kept until max_bytes"`
	MaxBytes   config.ByteSize `yaml:"max_bytes" help:"size limit of the stream; 0 = only jetstream.max_file bounds it"`
	Duplicates time.Duration   `yaml:"duplicates" help:"window in which a repeated Nats-Msg-Id is acked but not stored again"`
	Replicas   int             `yaml:"replicas" help:"copies of each message; 1 (clustering comes later)"`
	Discard    string          `yaml:"discard" help:"at max_bytes: new = refuse new messages, publishers keep and retry them (messages already consumed still count until max_age, so size max_bytes for max_age of data); old = delete the oldest, consumed or not"`
}

// HTTPConfig is the ops HTTP server.
type HTTPConfig struct {
	Addr string `yaml:"addr" help:"host:port of /healthz, /readyz, /metrics and /api/v1/status"`
}

// DefaultConfig is the local stack's gateway.
func DefaultConfig() Config {
	const day = 24 * time.Hour
	return Config{
		Region:  "local",
		DataDir: ".updraft/gateway",
		NATS: NATSConfig{
			Listen:     "127.0.0.1:4222",
			Monitor:    "127.0.0.1:8222",
			MaxPayload: 1 << 20,
		},
		JetStream: JetStreamConfig{SyncInterval: natsserver.SyncAlways},
		Streams: StreamsConfig{
			// Telemetry refuses rather than drops when full: the edges
			// still hold what the region cannot take.
			Telemetry: StreamConfig{Name: "TELEMETRY", MaxAge: 7 * day, Duplicates: 10 * time.Minute, Replicas: 1, Discard: "new"},
			Events:    StreamConfig{Name: "EVENTS", MaxAge: 7 * day, Duplicates: 10 * time.Minute, Replicas: 1, Discard: "old"},
			// Dead letters wait for a person to look at them, so they are kept longer.
			DeadLetter: StreamConfig{Name: "DEADLETTER", MaxAge: 30 * day, Duplicates: 10 * time.Minute, Replicas: 1, Discard: "old"},
		},
		HTTP: HTTPConfig{Addr: "127.0.0.1:7420"},
	}
}

// Flags binds the most-changed settings.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Region, "region", c.Region, "region this gateway serves (region)")
	fs.StringVar(&c.NATS.Listen, "listen", c.NATS.Listen, "NATS client address (nats.listen)")
	fs.StringVar(&c.NATS.Monitor, "monitor", c.NATS.Monitor, `NATS monitoring address, "" = off (nats.monitor)`)
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "JetStream store directory (data_dir)")
	fs.StringVar(&c.HTTP.Addr, "http-addr", c.HTTP.Addr, "ops HTTP address (http.addr)")
}

const (
	allowedToken    = "a non-empty name of at most 128 bytes without dots, spaces, wildcards (* >) or control characters"
	allowedHostPort = "host:port with a port from 0 to 65535, e.g. 127.0.0.1:4222"
	maxPayloadLimit = 64 << 20
)

// Validate checks every setting and names the first bad key.
func (c Config) Validate() error {
	if err := schemas.ValidateToken("region", c.Region); err != nil {
		return config.Invalid("region", c.Region, allowedToken)
	}
	if strings.ContainsAny(c.ServerName, " \t\r\n") {
		return config.Invalid("server_name", c.ServerName, "a name without whitespace, or empty for gw-<region>-1")
	}
	if c.DataDir == "" {
		return config.Invalid("data_dir", c.DataDir, "a directory path")
	}
	if !validHostPort(c.NATS.Listen) {
		return config.Invalid("nats.listen", c.NATS.Listen, allowedHostPort)
	}
	if c.NATS.Monitor != "" && !validHostPort(c.NATS.Monitor) {
		return config.Invalid("nats.monitor", c.NATS.Monitor, allowedHostPort+", or empty to turn monitoring off")
	}
	if c.NATS.MaxPayload < 1<<10 || c.NATS.MaxPayload > maxPayloadLimit {
		return config.Invalid("nats.max_payload", c.NATS.MaxPayload, "1KiB to 64MiB")
	}
	if c.JetStream.MaxMemory < 0 {
		return config.Invalid("jetstream.max_memory", c.JetStream.MaxMemory, "a size, or 0 for 75% of RAM")
	}
	if c.JetStream.MaxFile < 0 {
		return config.Invalid("jetstream.max_file", c.JetStream.MaxFile, "a size, or 0 for 75% of the free disk")
	}
	if s := c.JetStream.SyncInterval; !s.Always() && s <= 0 {
		return config.Invalid("jetstream.sync_interval", s, `"always" or a positive duration such as 1s`)
	}
	names := map[string]string{}
	var reserved config.ByteSize
	for _, s := range c.streamConfigs() {
		if err := s.cfg.validate("streams." + s.key); err != nil {
			return err
		}
		if other, dup := names[s.cfg.Name]; dup {
			return config.Invalid("streams."+s.key+".name", s.cfg.Name, "a name not used by streams."+other)
		}
		names[s.cfg.Name] = s.key
		// JetStream reserves each stream's max_bytes up front and refuses
		// a stream that does not fit.
		reserved += s.cfg.MaxBytes
		if c.JetStream.MaxFile > 0 && reserved > c.JetStream.MaxFile {
			return config.Invalid("streams."+s.key+".max_bytes", s.cfg.MaxBytes,
				fmt.Sprintf("a size that keeps the streams' max_bytes together within jetstream.max_file (%s)", c.JetStream.MaxFile))
		}
	}
	if !validHostPort(c.HTTP.Addr) {
		return config.Invalid("http.addr", c.HTTP.Addr, allowedHostPort)
	}
	return nil
}

func (s StreamConfig) validate(key string) error {
	if err := schemas.ValidateToken("stream name", s.Name); err != nil || strings.ContainsAny(s.Name, `/\`) {
		return config.Invalid(key+".name", s.Name, allowedToken+", and no slashes")
	}
	if s.MaxAge < 0 {
		return config.Invalid(key+".max_age", s.MaxAge, "a duration, or 0 for no age limit")
	}
	if s.MaxBytes < 0 {
		return config.Invalid(key+".max_bytes", s.MaxBytes, "a size, or 0 for no size limit")
	}
	if s.Duplicates <= 0 || (s.MaxAge > 0 && s.Duplicates > s.MaxAge) {
		return config.Invalid(key+".duplicates", s.Duplicates, "a positive duration no longer than max_age")
	}
	if s.Replicas != 1 {
		return config.Invalid(key+".replicas", s.Replicas, "1 (the gateway runs one server per region)")
	}
	if _, ok := discardPolicies[s.Discard]; !ok {
		return config.Invalid(key+".discard", s.Discard, "new or old")
	}
	return nil
}

var discardPolicies = map[string]jetstream.DiscardPolicy{"old": jetstream.DiscardOld, "new": jetstream.DiscardNew}

func validHostPort(addr string) bool {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

type namedStream struct {
	key     string
	cfg     StreamConfig
	subject string
}

func (c Config) streamConfigs() []namedStream {
	return []namedStream{
		{"telemetry", c.Streams.Telemetry, schemas.RegionTelemetryFilter(c.Region)},
		{"events", c.Streams.Events, schemas.RegionEventFilter(c.Region)},
		{"deadletter", c.Streams.DeadLetter, schemas.RegionDeadLetterFilter(c.Region)},
	}
}

// Specs are the streams the gateway reconciles at start.
func (c Config) Specs() []streams.Spec {
	var out []streams.Spec
	for _, s := range c.streamConfigs() {
		out = append(out, streams.Spec{
			Name:       s.cfg.Name,
			Subjects:   []string{s.subject},
			MaxAge:     s.cfg.MaxAge,
			MaxBytes:   int64(s.cfg.MaxBytes),
			Duplicates: s.cfg.Duplicates,
			Replicas:   s.cfg.Replicas,
			Discard:    discardPolicies[s.cfg.Discard],
		})
	}
	return out
}

// serverName applies the documented default.
func (c Config) serverName() string {
	if c.ServerName != "" {
		return c.ServerName
	}
	return fmt.Sprintf("gw-%s-1", c.Region)
}

// NATSServer is the embedded server's configuration.
func (c Config) NATSServer() natsserver.Config {
	return natsserver.Config{
		ServerName: c.serverName(),
		Domain:     c.Region,
		Listen:     c.NATS.Listen,
		Monitor:    c.NATS.Monitor,
		StoreDir:   c.DataDir,
		MaxPayload: int32(c.NATS.MaxPayload),
		MaxMemory:  int64(c.JetStream.MaxMemory),
		MaxFile:    int64(c.JetStream.MaxFile),
		Sync:       c.JetStream.SyncInterval,
	}
}
