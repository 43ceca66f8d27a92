package gateway

import (
	"flag"
	"fmt"
	"net"
	"net/url"
	"slices"
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
	Cluster    ClusterConfig   `yaml:"cluster"`
	Auth       AuthConfig      `yaml:"auth"`
	Leaf       LeafConfig      `yaml:"leaf"`
	JetStream  JetStreamConfig `yaml:"jetstream"`
	Streams    StreamsConfig   `yaml:"streams"`
	HTTP       HTTPConfig      `yaml:"http"`
}

// NATSConfig holds the NATS listeners.
type NATSConfig struct {
	Listen     string          `yaml:"listen" help:"host:port that edges and the cloud connect to (port 0 = any free port)"`
	Monitor    string          `yaml:"monitor" help:"host:port of the NATS monitoring endpoints /varz, /jsz, /healthz; empty = off"`
	MaxPayload config.ByteSize `yaml:"max_payload" help:"largest message the server accepts; every edge batch must fit (at most 64MiB)"`
	TLS        TLSConfig       `yaml:"tls"`
}

// TLSConfig secures a listener. With cert_file set, plaintext connections
// are refused.
type TLSConfig struct {
	CertFile      string `yaml:"cert_file" help:"PEM server certificate; set = TLS required on this listener"`
	KeyFile       string `yaml:"key_file" help:"PEM key of cert_file"`
	CAFile        string `yaml:"ca_file" help:"PEM CAs that sign client certificates (needed by verify_clients)"`
	VerifyClients bool   `yaml:"verify_clients" help:"mutual TLS: refuse clients without a certificate signed by ca_file"`
}

// LeafConfig joins the region to the cloud hub as a leaf node. The hub
// decides what it sources (its per-region export setting); export here is
// the region's own guard: subjects it does not allow never cross the link.
type LeafConfig struct {
	URL      string `yaml:"url" help:"hub leaf URL, nats-leaf://host:7422 or tls://host:7422; empty = not linked to a hub"`
	Export   string `yaml:"export" help:"what may leave the region: raw (everything), aggregates (no raw readings cross the link), none"`
	CAFile   string `yaml:"ca_file" help:"PEM CAs to trust for the hub's certificate"`
	CertFile string `yaml:"cert_file" help:"PEM client certificate for mutual TLS with the hub"`
	KeyFile  string `yaml:"key_file" help:"PEM key of cert_file"`
	User     string `yaml:"user" help:"user name at the hub, if it requires one"`
	Password string `yaml:"password" help:"password at the hub"`
}

// AuthConfig lists who may connect. Empty = anyone (local development only);
// with any entry, every client must present valid credentials.
type AuthConfig struct {
	Edges    []EdgeCredential    `yaml:"edges" help:"one entry per edge: it may publish only to its own subjects"`
	Services []ServiceCredential `yaml:"services" help:"full-access identities: the cloud's lake writer, operators"`
}

// EdgeCredential is one edge's identity: user and password, or an NKey.
type EdgeCredential struct {
	Site     string `yaml:"site" help:"the edge's site"`
	Edge     string `yaml:"edge" help:"the edge's name"`
	User     string `yaml:"user" help:"user name (with password)"`
	Password string `yaml:"password" help:"bcrypt hash of the password (nats server passwd), or the password itself"`
	NKey     string `yaml:"nkey" help:"public user NKey (U...) instead of user and password"`
}

// ServiceCredential is a full-access identity.
type ServiceCredential struct {
	User     string `yaml:"user" help:"user name (with password)"`
	Password string `yaml:"password" help:"bcrypt hash of the password, or the password itself"`
	NKey     string `yaml:"nkey" help:"public user NKey (U...) instead of user and password"`
}

// ClusterConfig makes the gateway one node of a regional cluster.
type ClusterConfig struct {
	Name   string   `yaml:"name" help:"cluster name, the same on every node of the region; empty = gw-<region>"`
	Listen string   `yaml:"listen" help:"host:port the other nodes' routes connect to; empty = a single-node gateway"`
	Routes []string `yaml:"routes" help:"nats-route://host:port of every node of the region (a node may list itself)"`
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
	Replicas   int             `yaml:"replicas" help:"copies of each message on different nodes: 1 for a single node; 3 (or 5) in a cluster, so a node can fail without loss"`
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
		Leaf: LeafConfig{Export: "raw"},
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
	if err := c.NATS.TLS.validate("nats.tls"); err != nil {
		return err
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	if err := c.Leaf.validate(); err != nil {
		return err
	}
	if err := c.Cluster.validate(c.ServerName); err != nil {
		return err
	}
	maxReplicas := 1
	if c.Cluster.Listen != "" {
		maxReplicas = min(5, max(len(c.Cluster.Routes), 1))
	}
	names := map[string]string{}
	var reserved config.ByteSize
	for _, s := range c.streamConfigs() {
		if err := s.cfg.validate("streams."+s.key, maxReplicas); err != nil {
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

func (t TLSConfig) validate(key string) error {
	switch {
	case t.CertFile == "" && (t.KeyFile != "" || t.CAFile != "" || t.VerifyClients):
		return config.Invalid(key+".cert_file", t.CertFile, "a PEM certificate file when other "+key+" settings are set")
	case t.CertFile != "" && t.KeyFile == "":
		return config.Invalid(key+".key_file", t.KeyFile, "the PEM key of "+key+".cert_file")
	case t.VerifyClients && t.CAFile == "":
		return config.Invalid(key+".ca_file", t.CAFile, "the PEM CAs that sign client certificates when verify_clients is true")
	}
	return nil
}

func (l LeafConfig) validate() error {
	if l.URL == "" {
		return nil
	}
	u, err := url.Parse(l.URL)
	if err != nil || (u.Scheme != "nats-leaf" && u.Scheme != "tls") || !validHostPort(u.Host) {
		return config.Invalid("leaf.url", l.URL, "nats-leaf://host:port or tls://host:port")
	}
	if !slices.Contains([]string{"raw", "aggregates", "none"}, l.Export) {
		return config.Invalid("leaf.export", l.Export, "raw, aggregates or none")
	}
	if (l.CertFile == "") != (l.KeyFile == "") {
		return config.Invalid("leaf.key_file", l.KeyFile, "set together with leaf.cert_file")
	}
	if l.Password != "" && l.User == "" {
		return config.Invalid("leaf.user", l.User, "a user name when leaf.password is set")
	}
	return nil
}

// leafDenyExports are the subjects the region never sends to the hub.
func (c Config) leafDenyExports() []string {
	switch c.Leaf.Export {
	case "aggregates":
		return []string{"telemetry." + c.Region + ".*.*." + schemas.KindRaw, "events." + c.Region + ".>", "deadletter." + c.Region + ".>"}
	case "none":
		return []string{">"}
	}
	return nil
}

func validCredential(key, user, password, nkey string) error {
	switch {
	case nkey != "" && (user != "" || password != ""):
		return config.Invalid(key+".nkey", nkey, "either nkey or user and password, not both")
	case nkey != "":
		if !strings.HasPrefix(nkey, "U") || len(nkey) != 56 {
			return config.Invalid(key+".nkey", nkey, "a public user NKey: 56 characters starting with U (nk -gen user -pubout)")
		}
	case user == "":
		return config.Invalid(key+".user", user, "a user name (with password) or an nkey")
	case password == "":
		return config.Invalid(key+".password", "", "a bcrypt hash (nats server passwd) or the password")
	case strings.ContainsAny(user, " \t\r\n"):
		return config.Invalid(key+".user", user, "a name without whitespace")
	}
	return nil
}

func (a AuthConfig) validate() error {
	ids := map[string]string{}
	unique := func(key, id string) error {
		if other, dup := ids[id]; dup {
			return config.Invalid(key, id, "an identity not already used by "+other)
		}
		ids[id] = key
		return nil
	}
	for i, e := range a.Edges {
		key := fmt.Sprintf("auth.edges[%d]", i)
		if err := schemas.ValidateToken("site", e.Site); err != nil {
			return config.Invalid(key+".site", e.Site, allowedToken)
		}
		if err := schemas.ValidateToken("edge", e.Edge); err != nil {
			return config.Invalid(key+".edge", e.Edge, allowedToken)
		}
		if err := validCredential(key, e.User, e.Password, e.NKey); err != nil {
			return err
		}
		if err := unique(key, e.User+e.NKey); err != nil {
			return err
		}
	}
	for i, sc := range a.Services {
		key := fmt.Sprintf("auth.services[%d]", i)
		if err := validCredential(key, sc.User, sc.Password, sc.NKey); err != nil {
			return err
		}
		if err := unique(key, sc.User+sc.NKey); err != nil {
			return err
		}
	}
	return nil
}

// EdgePermissions are the subjects an edge may publish to: its own
// telemetry, events and dead letters, nothing else. It may subscribe only
// to _INBOX.>, where JetStream's publish acknowledgements arrive; it needs
// no JetStream API access to publish.
func EdgePermissions(id schemas.EdgeID) (publish, subscribe []string) {
	return []string{
			"telemetry." + id.String() + ".>",
			"events." + id.String() + ".>",
			"deadletter." + id.String(),
		},
		[]string{"_INBOX.>"}
}

// users turns the auth section into server users.
func (c Config) users() []natsserver.User {
	var out []natsserver.User
	for _, e := range c.Auth.Edges {
		pub, sub := EdgePermissions(schemas.EdgeID{Region: c.Region, Site: e.Site, Edge: e.Edge})
		out = append(out, natsserver.User{Name: e.User, Password: e.Password, NKey: e.NKey, PublishAllow: pub, SubscribeAllow: sub})
	}
	for _, sc := range c.Auth.Services {
		out = append(out, natsserver.User{Name: sc.User, Password: sc.Password, NKey: sc.NKey})
	}
	return out
}

func (cl ClusterConfig) validate(serverName string) error {
	if cl.Listen == "" {
		if len(cl.Routes) > 0 || cl.Name != "" {
			return config.Invalid("cluster.listen", cl.Listen, "host:port for routes when cluster.routes or cluster.name is set")
		}
		return nil
	}
	if !validHostPort(cl.Listen) {
		return config.Invalid("cluster.listen", cl.Listen, allowedHostPort+", e.g. 0.0.0.0:6222")
	}
	if strings.ContainsAny(cl.Name, " \t\r\n.*>") {
		return config.Invalid("cluster.name", cl.Name, "a name without whitespace, dots or wildcards, or empty for gw-<region>")
	}
	if serverName == "" {
		return config.Invalid("server_name", serverName, "a name unique in the cluster (e.g. gw-<region>-1, -2, -3) when cluster.listen is set")
	}
	for i, r := range cl.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats-route" || !validHostPort(u.Host) {
			return config.Invalid(fmt.Sprintf("cluster.routes[%d]", i), r, "nats-route://host:port")
		}
	}
	return nil
}

func (s StreamConfig) validate(key string, maxReplicas int) error {
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
	if s.Replicas < 1 || s.Replicas > maxReplicas {
		if maxReplicas == 1 {
			return config.Invalid(key+".replicas", s.Replicas, "1 for a single-node gateway (set cluster.* to run 3 nodes and replicate)")
		}
		return config.Invalid(key+".replicas", s.Replicas, fmt.Sprintf("1 to %d: at most one copy per node listed in cluster.routes", maxReplicas))
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
		Cluster:    c.clusterOptions(),
		TLS: natsserver.TLS{CertFile: c.NATS.TLS.CertFile, KeyFile: c.NATS.TLS.KeyFile, CAFile: c.NATS.TLS.CAFile,
			VerifyClients: c.NATS.TLS.VerifyClients},
		Users: c.users(),
		Leaf: natsserver.Leaf{URL: c.Leaf.URL, CAFile: c.Leaf.CAFile, CertFile: c.Leaf.CertFile, KeyFile: c.Leaf.KeyFile,
			User: c.Leaf.User, Password: c.Leaf.Password, DenyExports: c.leafDenyExports()},
	}
}

func (c Config) clusterOptions() natsserver.Cluster {
	if c.Cluster.Listen == "" {
		return natsserver.Cluster{}
	}
	name := c.Cluster.Name
	if name == "" {
		name = "gw-" + c.Region
	}
	return natsserver.Cluster{Name: name, Listen: c.Cluster.Listen, Routes: slices.Clone(c.Cluster.Routes)}
}
