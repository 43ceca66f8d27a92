package ingest

import (
	"net/url"
	"time"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

// Fixed names of the regional stream and of this consumer; domains keep
// regions apart, so the names are the same in every region.
const (
	Stream   = "TELEMETRY"
	Consumer = "lake-writer"
)

// NATSConfig is how to reach the region's JetStream, the YAML section "nats".
type NATSConfig struct {
	URL           string        `yaml:"url" help:"NATS server URL(s), comma separated"`
	Domain        string        `yaml:"domain" help:"JetStream domain of the region (\"\" = the server's own)"`
	Creds         string        `yaml:"creds" help:"NATS credentials file (JWT + nkey)"`
	User          string        `yaml:"user" help:"NATS user name"`
	Password      string        `yaml:"password" help:"NATS password"`
	CAFile        string        `yaml:"ca_file" help:"PEM file of CAs to trust for TLS"`
	CertFile      string        `yaml:"cert_file" help:"PEM client certificate for TLS"`
	KeyFile       string        `yaml:"key_file" help:"PEM client key for TLS"`
	AckWait       time.Duration `yaml:"ack_wait" help:"redeliver an unacknowledged batch after this long (0 = 3 x lake.roll_interval + 30s)"`
	MaxAckPending int           `yaml:"max_ack_pending" help:"most batches delivered but not yet committed; reaching it forces a flush"`
}

// DefaultNATSConfig returns the defaults.
func DefaultNATSConfig() NATSConfig {
	return NATSConfig{URL: "nats://127.0.0.1:4222", MaxAckPending: 20_000}
}

// Config configures an Ingester.
type Config struct {
	// Region is which region's telemetry to consume; AllRegions takes every
	// region a global stream holds.
	Region string
	// StreamName is the stream to consume; "" is the regional Stream.
	StreamName string
	NATS       NATSConfig
}

// AllRegions as Config.Region consumes every region of the stream, as the
// cloud's writer of a global stream does.
const AllRegions = "*"

func (c Config) stream() string {
	if c.StreamName == "" {
		return Stream
	}
	return c.StreamName
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Region: "local", NATS: DefaultNATSConfig()}
}

// Validate reports the first bad setting, naming its YAML key.
func (c Config) Validate() error {
	if err := schemas.ValidateToken("region", c.Region); err != nil && c.Region != AllRegions {
		return config.Invalid("region", c.Region, `a region name: 1 to 128 bytes without dots, spaces or wildcards, or "*" for every region of a global stream`)
	}
	if c.StreamName != "" {
		if err := schemas.ValidateToken("stream", c.StreamName); err != nil {
			return config.Invalid("stream", c.StreamName, "a stream name without dots, spaces or wildcards")
		}
	}
	return c.NATS.Validate()
}

// Validate reports the first bad setting, naming its YAML key.
func (c NATSConfig) Validate() error {
	if c.URL == "" {
		return config.Invalid("nats.url", c.URL, "a URL such as nats://127.0.0.1:4222")
	}
	if u, err := url.Parse(firstURL(c.URL)); err != nil || u.Host == "" ||
		(u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
		return config.Invalid("nats.url", c.URL, "nats://, tls://, ws:// or wss:// URLs with a host, comma separated")
	}
	if c.Domain != "" {
		if err := schemas.ValidateToken("domain", c.Domain); err != nil {
			return config.Invalid("nats.domain", c.Domain, `"" or a domain name without dots, spaces or wildcards`)
		}
	}
	if c.Password != "" && c.User == "" {
		return config.Invalid("nats.user", c.User, "a user name when nats.password is set")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return config.Invalid("nats.key_file", c.KeyFile, "set together with nats.cert_file")
	}
	if c.AckWait != 0 && c.AckWait < time.Second {
		return config.Invalid("nats.ack_wait", c.AckWait, "0 (derived from lake.roll_interval) or at least 1s")
	}
	if c.MaxAckPending < 1 || c.MaxAckPending > 1_000_000 {
		return config.Invalid("nats.max_ack_pending", c.MaxAckPending, "1 to 1000000")
	}
	return nil
}

func firstURL(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			return s[:i]
		}
	}
	return s
}

// ackWait is the configured AckWait or one comfortably above a flush.
func (c NATSConfig) ackWait(rollInterval time.Duration) time.Duration {
	if c.AckWait != 0 {
		return c.AckWait
	}
	return 3*rollInterval + 30*time.Second
}
