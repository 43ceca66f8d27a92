package buffer

import (
	"errors"
	"time"

	"github.com/updraft-io/updraft/schemas/batch"
	"github.com/updraft-io/updraft/schemas/config"
)

// Policies: what the buffer does when max_bytes or max_age is reached.
const (
	// PolicyBlock stops accepting readings (Append's done waits, so MQTT
	// acknowledgements wait and the broker applies back-pressure).
	PolicyBlock = "block"
	// PolicyDropOldest deletes the oldest unsent batches.
	PolicyDropOldest = "drop_oldest"
	// PolicyDownsample replaces the oldest unsent raw batches by per-minute summaries.
	PolicyDownsample = "downsample"
)

// Profiles: how much memory Badger may use.
const (
	ProfileDevice = "device"
	ProfileServer = "server"
)

// MinMaxBytes is the smallest max_bytes accepted: below it a single batch
// would not fit.
const MinMaxBytes = 64 << 10

// Config configures a Buffer. The YAML keys live under "buffer." in the edge
// agent's configuration.
type Config struct {
	Dir               string          `yaml:"dir" help:"directory of the durable buffer, created if missing (one buffer per directory)"`
	MaxBytes          config.ByteSize `yaml:"max_bytes" help:"most encoded data kept for forwarding; the directory holds this plus a fixed overhead (docs/buffer.md)"`
	MaxAge            time.Duration   `yaml:"max_age" help:"oldest data kept for forwarding, by arrival time; 0 = no age limit"`
	Policy            string          `yaml:"policy" help:"at max_bytes or max_age: block (stop acknowledging MQTT), drop_oldest or downsample"`
	CommitInterval    time.Duration   `yaml:"commit_interval" help:"group-commit window: readings arriving within it share one fsync (longer = fewer disk writes, later MQTT acks)"`
	BatchMaxReadings  int             `yaml:"batch_max_readings" help:"seal a batch at this many readings"`
	BatchMaxAge       time.Duration   `yaml:"batch_max_age" help:"seal an open batch this old when the forwarder is waiting for one"`
	EncryptionKeyFile string          `yaml:"encryption_key_file" help:"file holding a raw 32-byte key: encrypts the buffer at rest with AES-256; empty = not encrypted"`
	Profile           string          `yaml:"profile" help:"Badger memory profile: device (small memtables and caches, for a Raspberry Pi) or server"`
	Compression       string          `yaml:"compression" help:"compression of Badger's tables: none (least memory; the device profile's) or snappy (the server profile's, whose tables hold every value: a third less disk for a backlog; with the device profile chunks are in the uncompressed value log and it saves little); empty = the profile's"`
}

// Table compression settings (Config.Compression).
const (
	CompressionNone   = "none"
	CompressionSnappy = "snappy"
)

// DefaultConfig returns the defaults documented in docs/buffer.md.
func DefaultConfig() Config {
	return Config{
		Dir:              ".updraft/edge/buffer",
		MaxBytes:         1 << 30,
		MaxAge:           168 * time.Hour,
		Policy:           PolicyBlock,
		CommitInterval:   2 * time.Millisecond,
		BatchMaxReadings: 10000,
		BatchMaxAge:      500 * time.Millisecond,
		Profile:          ProfileDevice,
	}
}

// Validate reports every invalid setting; each error is a *config.Error naming
// the key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, v any, allowed string) {
		errs = append(errs, config.Invalid("buffer."+key, v, allowed))
	}
	if c.Dir == "" {
		bad("dir", c.Dir, "a directory path, e.g. .updraft/edge/buffer")
	}
	if c.MaxBytes < MinMaxBytes {
		bad("max_bytes", c.MaxBytes, "at least 64KiB, e.g. 1GiB")
	}
	if c.MaxAge < 0 {
		bad("max_age", c.MaxAge, "0 (no age limit) or a positive duration, e.g. 168h")
	}
	switch c.Policy {
	case PolicyBlock, PolicyDropOldest, PolicyDownsample:
	default:
		bad("policy", c.Policy, "block, drop_oldest, downsample")
	}
	if c.CommitInterval < 0 || c.CommitInterval > time.Second {
		bad("commit_interval", c.CommitInterval, "0s to 1s, e.g. 2ms")
	}
	if c.BatchMaxReadings < 1 || c.BatchMaxReadings > batch.MaxRows {
		bad("batch_max_readings", c.BatchMaxReadings, "1 to 1048576, e.g. 10000")
	}
	if c.BatchMaxAge <= 0 || c.BatchMaxAge > time.Hour {
		bad("batch_max_age", c.BatchMaxAge, "a positive duration up to 1h, e.g. 500ms")
	}
	switch c.Profile {
	case ProfileDevice, ProfileServer:
	default:
		bad("profile", c.Profile, "device, server")
	}
	switch c.Compression {
	case "", CompressionNone, CompressionSnappy:
	default:
		bad("compression", c.Compression, "none, snappy, or empty for the profile's")
	}
	return errors.Join(errs...)
}

// segmentBytes is how much is written to one segment before the next begins.
// Space comes back a whole segment at a time (one DropPrefix), so a segment is
// small next to max_bytes, yet large enough that the heavy DropPrefix is rare.
func (c Config) segmentBytes() int64 {
	hi := int64(16 << 20)
	if c.Profile == ProfileServer {
		hi = 64 << 20
	}
	return min(max(int64(c.MaxBytes)/16, 256<<10), hi)
}
