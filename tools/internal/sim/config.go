package sim

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

// Config is the simulator's configuration, read from YAML by config.Main.
type Config struct {
	Broker         string        `yaml:"broker" help:"MQTT broker URL: tcp://host:port, ssl://host:port or ws://host:port/path"`
	Devices        int           `yaml:"devices" help:"number of simulated devices, named dev-00001, dev-00002, ..."`
	Rate           float64       `yaml:"rate" help:"messages per second over all devices; 0 = as fast as the broker acknowledges"`
	Duration       time.Duration `yaml:"duration" help:"stop after this long; 0 = until stopped or messages is reached"`
	Messages       int64         `yaml:"messages" help:"stop after this many messages; 0 = unlimited"`
	QoS            int           `yaml:"qos" help:"MQTT QoS of every publish: 0 or 1"`
	Seed           int64         `yaml:"seed" help:"seed of the values and of the device order; the same seed gives the same messages"`
	Connections    int           `yaml:"connections" help:"MQTT connections shared by the devices; 0 = one per 16 devices, 1 to 4"`
	MaxInFlight    int           `yaml:"max_inflight" help:"publishes per connection still waiting for the broker's ack"`
	ClientIDPrefix string        `yaml:"client_id_prefix" help:"client ids are <prefix>-1 .. <prefix>-<connections>; give every running simulator its own"`
	Username       string        `yaml:"username" help:"MQTT user name; empty = none"`
	Password       string        `yaml:"password" help:"MQTT password"`
	Format         string        `yaml:"format" help:"payload format: json, senml, sparkplug, tasmota, zigbee2mqtt, homie or numeric (docs/payloads.md)"`
	Topic          string        `yaml:"topic" help:"topic template; {device} is replaced by the device id; empty = the format's own (json: devices/{device}/telemetry)"`
	Timestamps     bool          `yaml:"timestamps" help:"put the publish time in each payload as \"ts\" (Unix ms); false = the receiver stamps readings"`
	Period         time.Duration `yaml:"period" help:"period of the daily cycle of every signal; shorten it (e.g. 10m) to see the waves in a demo"`
	Metrics        Metrics       `yaml:"metrics" help:"the numeric fields of each payload, a list of the entries below"`
	ConnectTimeout time.Duration `yaml:"connect_timeout" help:"how long to keep trying to reach the broker at start"`
	DrainTimeout   time.Duration `yaml:"drain_timeout" help:"how long to wait at the end for the acks of publishes in flight"`
	Progress       time.Duration `yaml:"progress" help:"progress interval: a log line this often, or a live line on a terminal; 0 = off"`
	Summary        string        `yaml:"summary" help:"write a JSON summary of what the broker acknowledged to this file at the end; empty = none"`
	TLS            TLSConfig     `yaml:"tls"`
	Anomalies      Anomalies     `yaml:"anomalies"`
	HTTP           HTTPConfig    `yaml:"http"`
}

// TLSConfig secures ssl://, tls:// and mqtts:// brokers.
type TLSConfig struct {
	CA                 string `yaml:"ca" help:"PEM file of the CA that signed the broker's certificate; empty = the system's roots"`
	Cert               string `yaml:"cert" help:"PEM client certificate for mutual TLS; empty = none"`
	Key                string `yaml:"key" help:"PEM private key of cert"`
	ServerName         string `yaml:"server_name" help:"name to verify the broker's certificate against; empty = the URL's host"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" help:"accept any broker certificate (tests only)"`
}

// Anomalies makes devices misbehave the way real ones do, so dead-letter
// handling and rules are exercised. Rates are probabilities per sample.
type Anomalies struct {
	Spike      float64       `yaml:"spike" help:"probability that a value jumps by 10 amplitudes for one sample"`
	Stuck      float64       `yaml:"stuck" help:"probability that a device's values freeze for the next 20 samples"`
	Dropout    float64       `yaml:"dropout" help:"probability that a sample is not published at all"`
	OutOfOrder float64       `yaml:"out_of_order" help:"probability that a sample is held back and published after the next one"`
	Late       float64       `yaml:"late" help:"probability that a sample's timestamp lies late_by in the past"`
	LateBy     time.Duration `yaml:"late_by" help:"how far in the past a late sample's timestamp lies"`
	Malformed  float64       `yaml:"malformed" help:"probability that a payload is corrupted (the agent dead-letters it)"`
}

// HTTPConfig is the simulator's ops HTTP server.
type HTTPConfig struct {
	Addr string `yaml:"addr" help:"host:port of /healthz, /metrics and /api/v1/status; empty = off"`
}

// Metric is one simulated sensor channel: a daily sine around Base plus
// Gaussian noise plus a slow random drift, quantized to Resolution the way a
// real sensor reports it.
type Metric struct {
	Name      string  `yaml:"name" help:"JSON field name, also the metric name downstream"`
	Unit      string  `yaml:"unit" help:"unit (UCUM, e.g. Cel, hPa); documents the channel, not sent in the payload"`
	Base      float64 `yaml:"base" help:"mean value"`
	Amplitude float64 `yaml:"amplitude" help:"half the swing of the daily cycle"`
	// Noise is the standard deviation of the per-sample noise.
	Noise float64 `yaml:"noise" help:"standard deviation of the noise of each sample"`
	// Drift is the typical size (standard deviation) of the slow wander;
	// it moves over about half a period.
	Drift      float64 `yaml:"drift" help:"typical size of a slow wander that changes over about half a period"`
	Resolution float64 `yaml:"resolution" help:"sensor resolution; values are multiples of it (0.1, 0.5, ...)"`
}

// Metrics is the list of fields of every payload.
type Metrics []Metric

// DefaultMetrics are an indoor climate sensor's: temperature in degrees
// Celsius (UCUM "Cel"), relative humidity and barometric pressure.
func DefaultMetrics() Metrics {
	return Metrics{
		{Name: "temperature", Unit: "Cel", Base: 21, Amplitude: 3, Noise: 0.1, Drift: 0.5, Resolution: 0.1},
		{Name: "humidity", Unit: "%RH", Base: 45, Amplitude: 8, Noise: 0.8, Drift: 2, Resolution: 0.5},
		{Name: "pressure", Unit: "hPa", Base: 1013.2, Amplitude: 1.5, Noise: 0.1, Drift: 3, Resolution: 0.1},
	}
}

// DefaultConfig publishes 1000 messages/s from 50 devices to the local
// stack's broker until stopped.
func DefaultConfig() Config {
	return Config{
		Broker:         "tcp://127.0.0.1:1883",
		Devices:        50,
		Rate:           1000,
		QoS:            1,
		Seed:           1,
		MaxInFlight:    1000,
		ClientIDPrefix: "updraft-sim",
		Format:         FormatJSON,
		Topic:          "",
		Anomalies:      Anomalies{LateBy: 10 * time.Minute},
		Timestamps:     true,
		Period:         24 * time.Hour,
		Metrics:        DefaultMetrics(),
		ConnectTimeout: 30 * time.Second,
		DrainTimeout:   10 * time.Second,
		Progress:       10 * time.Second,
	}
}

// Flags binds the most-changed settings.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Broker, "broker", c.Broker, "MQTT broker URL (broker)")
	fs.IntVar(&c.Devices, "devices", c.Devices, "number of devices (devices)")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "messages per second in total, 0 = unthrottled (rate)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "stop after this long, 0 = never (duration)")
	fs.Int64Var(&c.Messages, "messages", c.Messages, "stop after this many messages, 0 = never (messages)")
	fs.IntVar(&c.QoS, "qos", c.QoS, "MQTT QoS, 0 or 1 (qos)")
	fs.Int64Var(&c.Seed, "seed", c.Seed, "seed of values and device order (seed)")
	fs.IntVar(&c.Connections, "connections", c.Connections, "MQTT connections, 0 = auto (connections)")
	fs.StringVar(&c.ClientIDPrefix, "client-id", c.ClientIDPrefix, "client id prefix (client_id_prefix)")
	fs.StringVar(&c.Username, "username", c.Username, "MQTT user name (username)")
	fs.StringVar(&c.Password, "password", c.Password, "MQTT password (password)")
	fs.DurationVar(&c.Period, "period", c.Period, "period of the signals' daily cycle (period)")
	fs.StringVar(&c.Summary, "summary", c.Summary, "write a JSON summary to this file (summary)")
	fs.StringVar(&c.Format, "format", c.Format, "payload format: json|senml|sparkplug|tasmota|zigbee2mqtt|homie|numeric (format)")
	fs.StringVar(&c.Topic, "topic", c.Topic, "topic template with {device}, empty = the format's own (topic)")
	fs.Float64Var(&c.Anomalies.Malformed, "malformed", c.Anomalies.Malformed, "probability of a corrupted payload (anomalies.malformed)")
	fs.Float64Var(&c.Anomalies.Spike, "spikes", c.Anomalies.Spike, "probability of a spike per value (anomalies.spike)")
	fs.Float64Var(&c.Anomalies.Dropout, "dropouts", c.Anomalies.Dropout, "probability that a sample is dropped (anomalies.dropout)")
	fs.StringVar(&c.TLS.CA, "tls-ca", c.TLS.CA, "CA PEM file for ssl:// brokers (tls.ca)")
	fs.StringVar(&c.HTTP.Addr, "http", c.HTTP.Addr, `ops HTTP address, "" = off (http.addr)`)
}

// Validate checks every setting and names the first bad key.
func (c Config) Validate() error {
	if u, err := url.Parse(c.Broker); err != nil || u.Host == "" ||
		!(u.Scheme == "tcp" || u.Scheme == "mqtt" || u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "mqtts" || u.Scheme == "ws" || u.Scheme == "wss") {
		return config.Invalid("broker", c.Broker, "a URL such as tcp://127.0.0.1:1883 (schemes tcp, mqtt, ssl, tls, mqtts, ws, wss)")
	}
	if c.Devices < 1 || c.Devices > MaxDevices {
		return config.Invalid("devices", c.Devices, "1 to 100000")
	}
	if _, ok := formatTopics[c.Format]; !ok {
		return config.Invalid("format", c.Format, "json, senml, sparkplug, tasmota, zigbee2mqtt, homie or numeric")
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		return config.Invalid("rate", c.Rate, "messages per second >= 0 (0 = unthrottled)")
	}
	if c.Duration < 0 {
		return config.Invalid("duration", c.Duration, "a duration >= 0 (0 = until stopped)")
	}
	if c.Messages < 0 {
		return config.Invalid("messages", c.Messages, "a count >= 0 (0 = unlimited)")
	}
	if c.QoS != 0 && c.QoS != 1 {
		return config.Invalid("qos", c.QoS, "0 or 1")
	}
	if c.Connections < 0 || c.Connections > c.Devices {
		return config.Invalid("connections", c.Connections, "1 to the number of devices (one per device), or 0 for one per 16 devices (1 to 4)")
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 60000 {
		// paho numbers in-flight messages with 16-bit ids.
		return config.Invalid("max_inflight", c.MaxInFlight, "1 to 60000")
	}
	if c.ClientIDPrefix == "" || len(c.ClientIDPrefix) > 20 {
		return config.Invalid("client_id_prefix", c.ClientIDPrefix, "1 to 20 characters (MQTT 3.1 brokers may refuse client ids longer than 23)")
	}
	if c.Password != "" && c.Username == "" {
		return config.Invalid("username", c.Username, "a user name when password is set")
	}
	if err := validTopic(c.topic()); err != nil {
		return config.Invalid("topic", c.Topic, err.Error())
	}
	if c.Format == FormatSparkplug && c.Topic != "" {
		return config.Invalid("topic", c.Topic, `"" for sparkplug: topics follow spBv1.0/updraft/<type>/<node>/<device>`)
	}
	for _, a := range []struct {
		key string
		p   float64
	}{{"spike", c.Anomalies.Spike}, {"stuck", c.Anomalies.Stuck}, {"dropout", c.Anomalies.Dropout},
		{"out_of_order", c.Anomalies.OutOfOrder}, {"late", c.Anomalies.Late}, {"malformed", c.Anomalies.Malformed}} {
		if !(a.p >= 0 && a.p <= 1) {
			return config.Invalid("anomalies."+a.key, a.p, "a probability from 0 to 1")
		}
	}
	if c.Anomalies.LateBy < 0 {
		return config.Invalid("anomalies.late_by", c.Anomalies.LateBy, "a duration >= 0")
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return config.Invalid("tls.key", c.TLS.Key, "set together with tls.cert")
	}
	if c.Period <= 0 {
		return config.Invalid("period", c.Period, "a positive duration, e.g. 24h or 10m")
	}
	if err := c.Metrics.validate(); err != nil {
		return err
	}
	if c.ConnectTimeout <= 0 {
		return config.Invalid("connect_timeout", c.ConnectTimeout, "a positive duration")
	}
	if c.DrainTimeout <= 0 {
		return config.Invalid("drain_timeout", c.DrainTimeout, "a positive duration")
	}
	if c.Progress < 0 {
		return config.Invalid("progress", c.Progress, "a duration >= 0 (0 = off)")
	}
	if c.HTTP.Addr != "" {
		if _, p, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
			return config.Invalid("http.addr", c.HTTP.Addr, "host:port, e.g. 127.0.0.1:7440, or empty for off")
		} else if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
			return config.Invalid("http.addr", c.HTTP.Addr, "host:port with a port from 0 to 65535")
		}
	}
	return nil
}

func validTopic(t string) error {
	const allowed = "a topic containing {device}, without the wildcards + and #, e.g. devices/{device}/telemetry"
	if !strings.Contains(t, "{device}") || strings.ContainsAny(t, "+#\x00") || strings.HasPrefix(t, "$") {
		return fmt.Errorf("%s", allowed)
	}
	return nil
}

// Bounds of the signal parameters: they keep every generated value finite
// and printable with at most six decimals.
const (
	maxMagnitude  = 1e12
	minResolution = 1e-6
)

func (ms Metrics) validate() error {
	if len(ms) == 0 {
		return config.Invalid("metrics", "[]", "at least one metric")
	}
	seen := map[string]bool{}
	for i, m := range ms {
		key := fmt.Sprintf("metrics[%d]", i)
		if err := schemas.ValidateToken("metric", m.Name); err != nil || m.Name == "ts" || strings.ContainsAny(m.Name, `"\`) || !utf8.ValidString(m.Name) {
			return config.Invalid(key+".name", m.Name, `a metric name: UTF-8, non-empty, at most 128 bytes, no dots, spaces, wildcards, quotes or backslashes, not "ts"`)
		}
		if seen[m.Name] {
			return config.Invalid(key+".name", m.Name, "a name no other metric uses")
		}
		seen[m.Name] = true
		if len(m.Unit) > schemas.MaxTokenLen {
			return config.Invalid(key+".unit", m.Unit, "at most 128 bytes")
		}
		for _, f := range []struct {
			name string
			v    float64
		}{{"base", m.Base}, {"amplitude", m.Amplitude}, {"noise", m.Noise}, {"drift", m.Drift}} {
			if !(math.Abs(f.v) <= maxMagnitude) || (f.name != "base" && f.v < 0) {
				return config.Invalid(key+"."+f.name, f.v, "a number from -1e12 to 1e12 (at least 0 except base)")
			}
		}
		if !(m.Resolution >= minResolution && m.Resolution <= maxMagnitude) {
			return config.Invalid(key+".resolution", m.Resolution, "a step from 1e-6 to 1e12, such as 0.1 or 0.5")
		}
	}
	return nil
}

// MaxDevices is the largest fleet one simulator runs.
const MaxDevices = 100000

// Payload formats.
const (
	FormatJSON        = "json"
	FormatSenML       = "senml"
	FormatSparkplug   = "sparkplug"
	FormatTasmota     = "tasmota"
	FormatZigbee2MQTT = "zigbee2mqtt"
	FormatHomie       = "homie"
	FormatNumeric     = "numeric"
)

// formatTopics is each format's default topic; homie and numeric add
// /<node>/<metric> and /<metric>.
var formatTopics = map[string]string{
	FormatJSON:        "devices/{device}/telemetry",
	FormatSenML:       "senml/{device}",
	FormatSparkplug:   "spBv1.0/updraft/DDATA/{device}",
	FormatTasmota:     "tele/{device}/SENSOR",
	FormatZigbee2MQTT: "zigbee2mqtt/{device}",
	FormatHomie:       "homie/5/{device}",
	FormatNumeric:     "sensors/{device}",
}

// topic is the configured topic or the format's default.
func (c Config) topic() string {
	if c.Topic != "" {
		return c.Topic
	}
	return formatTopics[c.Format]
}

// connections applies the documented default.
func (c Config) connections() int {
	if c.Connections > 0 {
		return c.Connections
	}
	return min(max((c.Devices+15)/16, 1), 4)
}

// DeviceID names device i (0-based) as dev-00001, dev-00002, ...
func DeviceID(i int) string { return fmt.Sprintf("dev-%05d", i+1) }

// inflightPerConn bounds each connection's unacknowledged publishes so that
// many connections together hold at most a million.
func (c Config) inflightPerConn() int {
	return max(1, min(c.MaxInFlight, 1_000_000/c.connections()))
}

// config builds the TLS settings; nil when nothing is configured and the
// broker URL is not a TLS one (paho then uses its defaults).
func (t TLSConfig) config() (*tls.Config, error) {
	if t == (TLSConfig{}) {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // insecure_skip_verify is documented as for tests
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("read tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, config.Invalid("tls.ca", t.CA, "a PEM file holding at least one certificate")
		}
		cfg.RootCAs = pool
	}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("load tls.cert and tls.key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// deviceKey is device i's name as the agent decodes it.
func (s *Sim) deviceKey(i int) string {
	if s.cfg.Format == FormatSparkplug {
		return spNodeID(i%s.cfg.connections()) + "/" + DeviceID(i)
	}
	return DeviceID(i)
}
