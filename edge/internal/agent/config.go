package agent

import (
	"net/url"
	"strings"
	"time"

	"github.com/updraft-io/updraft/edge/internal/aggregate"
	"github.com/updraft-io/updraft/edge/internal/broker"
	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/edge/internal/decode"
	"github.com/updraft-io/updraft/edge/internal/forward"
	"github.com/updraft-io/updraft/edge/internal/ingest"
	"github.com/updraft-io/updraft/edge/internal/rules"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

// Config is the whole edge agent configuration (deploy/local/edge.yaml).
type Config struct {
	Region string         `yaml:"region" help:"region this edge belongs to (a subject token)"`
	Site   string         `yaml:"site" help:"site of this edge (a subject token)"`
	Edge   string         `yaml:"edge" help:"id of this edge agent, unique within its site (a subject token)"`
	MQTT   ingest.Config  `yaml:"mqtt"`
	Broker broker.Config  `yaml:"broker"`
	Decode decode.Config  `yaml:"decode"`
	Buffer buffer.Config  `yaml:"buffer"`
	NATS   NATSConfig     `yaml:"nats"`
	Fwd    forward.Config `yaml:"forward"`
	HTTP   HTTPConfig     `yaml:"http"`
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT): the
	// garbage collector works harder as the heap nears it, which keeps the
	// agent small on a Raspberry Pi at a modest CPU cost.
	MemoryLimit config.ByteSize `yaml:"memory_limit" help:"soft limit for the Go heap (like GOMEMLIMIT, which overrides it); 0 = none"`
	// GCPercent is the garbage collector's GOGC below the memory limit. Most
	// of what the agent allocates is short-lived (decoded messages, batches
	// being encoded), so 50 keeps the heap at 1.5 times its live part: with
	// a 1 GiB backlog draining, peak RSS was 59-61 MiB against 64-66 MiB at
	// Go's default of 100 (docs/buffer.md, "Memory").
	GCPercent int `yaml:"gc_percent" help:"garbage collector target, percent of the live heap (like GOGC, which overrides it)"`
	// CodeRelease: how often the pages of the agent's executable that are
	// not in use leave the resident set (releaseCode). Code that ran once at
	// start otherwise counts in the agent's RSS for good.
	CodeRelease time.Duration `yaml:"code_release_interval" help:"how often the agent's own code pages not in use are dropped from resident memory (Linux; 0 = never)"`
	// CPUPolicy is the Linux scheduling policy of the agent's threads
	// (cpupolicy_linux.go): batch keeps a message's arrival from preempting
	// the broker that sent it.
	CPUPolicy string `yaml:"cpu_policy" help:"Linux scheduling policy of the agent's threads: batch (woken by a message, the agent waits for a free core or the scheduler's tick instead of preempting the broker that sent it) or normal"`
	// Aggregate and Rules reload on SIGHUP (docs/aggregation.md).
	Aggregate aggregate.Config `yaml:"aggregate"`
	Rules     []rules.Rule     `yaml:"rules" help:"alert rules (docs/aggregation.md)"`
	Local     LocalConfig      `yaml:"local"`
}

// LocalConfig is what the agent publishes on the site's MQTT broker
// (mqtt.broker) for local consumers.
type LocalConfig struct {
	TopicPrefix       string        `yaml:"topic_prefix" help:"first topic level of alerts (<prefix>/alerts/<site>/<device>/<rule>) and aggregates (<prefix>/agg/<site>/<device>/<metric>/<window>); \"\" publishes nothing"`
	PublishAggregates bool          `yaml:"publish_aggregates" help:"publish every closed window as JSON on the local broker"`
	Tick              time.Duration `yaml:"tick" help:"how often windows of silent series are closed and absence rules checked"`
}

// NATSConfig is the uplink to the regional gateway.
type NATSConfig struct {
	URL          string `yaml:"url" help:"regional NATS URL(s), comma separated: nats://host:4222 or tls://host:4222"`
	CredsFile    string `yaml:"creds_file" help:"NATS credentials file (JWT + NKey seed) for this edge"`
	NKeyFile     string `yaml:"nkey_file" help:"NKey seed file for this edge (alternative to creds_file)"`
	User         string `yaml:"user" help:"NATS user name (alternative to creds_file)"`
	PasswordFile string `yaml:"password_file" help:"file holding the NATS password"`
	CAFile       string `yaml:"ca_file" help:"PEM CA bundle to verify the gateway's TLS certificate"`
	CertFile     string `yaml:"cert_file" help:"PEM client certificate for mutual TLS"`
	KeyFile      string `yaml:"key_file" help:"PEM client key for mutual TLS"`
}

// HTTPConfig is the ops and status endpoint.
type HTTPConfig struct {
	Addr string `yaml:"addr" help:"address for /healthz, /readyz, /metrics and /api/v1/status (\"\" disables)"`
}

// DefaultConfig returns the defaults used by the local stack.
func DefaultConfig() Config {
	return Config{
		Region: "local", Site: "lab", Edge: "edge-1",
		MQTT: ingest.DefaultConfig(),
		Broker: func() broker.Config {
			// Production sites have a broker already; the local stack turns this on.
			b := broker.DefaultConfig()
			b.Enabled = false
			return b
		}(),
		Decode:      decode.DefaultConfig(),
		Buffer:      buffer.DefaultConfig(),
		NATS:        NATSConfig{URL: "nats://127.0.0.1:4222"},
		Fwd:         forward.DefaultConfig(),
		HTTP:        HTTPConfig{Addr: "127.0.0.1:7410"},
		MemoryLimit: 40 << 20,
		GCPercent:   50,
		CodeRelease: 10 * time.Second,
		CPUPolicy:   CPUPolicyBatch,
		Aggregate:   aggregate.DefaultConfig(),
		Local:       LocalConfig{TopicPrefix: "updraft", PublishAggregates: true, Tick: 200 * time.Millisecond},
	}
}

// EdgeID is this agent's identity.
func (c Config) EdgeID() schemas.EdgeID {
	return schemas.EdgeID{Region: c.Region, Site: c.Site, Edge: c.Edge}
}

// Validate checks every section, naming the key at fault.
func (c Config) Validate() error {
	for _, f := range []struct{ key, v string }{{"region", c.Region}, {"site", c.Site}, {"edge", c.Edge}} {
		if err := schemas.ValidateToken(f.key, f.v); err != nil {
			return config.Invalid(f.key, f.v, "a non-empty token without spaces, dots, '*' or '>'")
		}
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < 16<<20 {
		return config.Invalid("memory_limit", c.MemoryLimit, "0 (none) or at least 16MiB")
	}
	if c.GCPercent < 10 || c.GCPercent > 1000 {
		return config.Invalid("gc_percent", c.GCPercent, "10 to 1000 (Go's default is 100)")
	}
	if c.CPUPolicy != CPUPolicyBatch && c.CPUPolicy != CPUPolicyNormal {
		return config.Invalid("cpu_policy", c.CPUPolicy, "batch or normal")
	}
	if c.CodeRelease != 0 && (c.CodeRelease < time.Second || c.CodeRelease > time.Hour) {
		return config.Invalid("code_release_interval", c.CodeRelease, "0s (never) or 1s to 1h, e.g. 10s")
	}
	if err := buffer.CheckPlatform(); err != nil {
		return err
	}
	for _, u := range strings.Split(c.NATS.URL, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls" && p.Scheme != "ws" && p.Scheme != "wss") {
			return config.Invalid("nats.url", c.NATS.URL, "nats://host:port or tls://host:port URLs, comma separated")
		}
	}
	if (c.NATS.CertFile == "") != (c.NATS.KeyFile == "") {
		return config.Invalid("nats.cert_file", c.NATS.CertFile, "set together with nats.key_file")
	}
	n := 0
	for _, set := range []bool{c.NATS.CredsFile != "", c.NATS.NKeyFile != "", c.NATS.User != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return config.Invalid("nats.creds_file", c.NATS.CredsFile, "only one of nats.creds_file, nats.nkey_file, nats.user")
	}
	for _, v := range []interface{ Validate() error }{c.MQTT, c.Broker, c.Decode, c.Buffer, c.Fwd, c.Aggregate} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	if err := rules.Validate(c.Rules, c.windows()); err != nil {
		return err
	}
	if c.Local.TopicPrefix != "" && (strings.ContainsAny(c.Local.TopicPrefix, "+#") || strings.HasPrefix(c.Local.TopicPrefix, "/") || strings.HasSuffix(c.Local.TopicPrefix, "/")) {
		return config.Invalid("local.topic_prefix", c.Local.TopicPrefix, "MQTT topic levels without wildcards or a leading or trailing '/', e.g. updraft")
	}
	if c.Local.Tick < 10*time.Millisecond || c.Local.Tick > 10*time.Second {
		return config.Invalid("local.tick", c.Local.Tick, "between 10ms and 10s")
	}
	return nil
}

// windows are the aggregate window sizes in force (none when aggregation is off).
func (c Config) windows() []time.Duration {
	if !c.Aggregate.Enabled {
		return nil
	}
	return c.Aggregate.Windows
}
