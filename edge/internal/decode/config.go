package decode

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

// Formats and timestamp units a Subscription accepts.
const (
	FormatJSON        = "json"
	FormatSenML       = "senml"
	FormatSparkplug   = "sparkplug"
	FormatTasmota     = "tasmota"
	FormatZigbee2MQTT = "zigbee2mqtt"
	FormatHomie       = "homie"
	FormatNumeric     = "numeric"

	UnitSeconds = "s"
	UnitMillis  = "ms"
	UnitMicros  = "us"
	UnitNanos   = "ns"
	UnitRFC3339 = "rfc3339"
)

// Defaults of a Subscription's optional fields.
const (
	DefaultTimestampField = "ts"
	DefaultTimestampUnit  = UnitMillis
	DefaultFormat         = FormatJSON
)

// Subscription says which MQTT messages to read and how.
type Subscription struct {
	Topic    string `yaml:"topic" help:"MQTT topic filter to subscribe to"`
	Template string `yaml:"template" help:"topic levels that name the reading: {device} (required unless device is set), {metric}, {site} (must be this edge's site); unused by sparkplug"`
	Format   string `yaml:"format" help:"payload format: json, senml, sparkplug, tasmota, zigbee2mqtt, homie or numeric (docs/payloads.md)"`
	// Device names the device when the template has no {device}, for a
	// topic that only ever carries one device.
	Device         string            `yaml:"device" help:"fixed device name when the template has no {device}"`
	TimestampField string            `yaml:"timestamp_field" help:"JSON field holding the event time; absent means the receive time (default ts)"`
	TimestampUnit  string            `yaml:"timestamp_unit" help:"unit of a numeric timestamp: s, ms, us, ns, or rfc3339 for strings only; RFC 3339 strings are accepted with any unit (default ms)"`
	Units          map[string]string `yaml:"units" help:"unit of each metric, e.g. temperature: Cel"`
	// Separator joins the keys of nested objects into one metric name.
	Separator string `yaml:"separator" help:"join nested object keys and 1-based array indexes with this to name metrics, e.g. _; empty = nested values are rejected (json); tasmota, zigbee2mqtt and homie use _ when empty"`
	// Arrays lets a json payload carry several samples.
	Arrays bool `yaml:"arrays" help:"json: also accept an array of objects, each a sample with its own timestamp"`
	// Ignore names fields that describe rather than measure.
	Ignore []string `yaml:"ignore" help:"fields that are not readings and are skipped: a key or a flattened path (tasmota and zigbee2mqtt add their own, docs/payloads.md)"`
	// Rebirth asks Sparkplug nodes to publish their births again.
	Rebirth bool `yaml:"rebirth" help:"sparkplug: on a sequence gap or data the decoder cannot resolve, request a rebirth on NCMD (needs the agent to publish)"`
}

// Command is a message the decoder asks its caller to publish: a Sparkplug
// rebirth request on a node's NCMD topic.
type Command struct {
	Topic   string
	Payload []byte
}

// Config configures a Decoder.
type Config struct {
	Subscriptions   []Subscription  `yaml:"subscriptions" help:"MQTT subscriptions and how to decode their messages"`
	MaxPayloadBytes config.ByteSize `yaml:"max_payload_bytes" help:"larger payloads are rejected as oversized"`
	MaxClockSkew    time.Duration   `yaml:"max_clock_skew" help:"timestamps later than now plus this are rejected as future_timestamp"`
	// OnCommand, if set, is called from Decode with a message to publish
	// (QoS 0, not retained). It must not block: Decode runs on the MQTT
	// client's delivery goroutine.
	OnCommand func(Command) `yaml:"-"`
}

// DefaultConfig reads what the Updraft simulator publishes.
func DefaultConfig() Config {
	return Config{
		Subscriptions: []Subscription{{
			Topic:          "devices/+/telemetry",
			Template:       "devices/{device}/telemetry",
			Format:         DefaultFormat,
			TimestampField: DefaultTimestampField,
			TimestampUnit:  DefaultTimestampUnit,
			Units:          map[string]string{"temperature": "Cel", "humidity": "%RH", "pressure": "hPa"},
		}},
		MaxPayloadBytes: 256 << 10,
		MaxClockSkew:    5 * time.Minute,
	}
}

// maxPayloadLimit is MQTT's own limit on a packet.
const maxPayloadLimit = 256 << 20

// keyPrefix is where the agent's configuration file holds this section.
const keyPrefix = "decode."

// Validate checks the configuration; errors name the YAML key under the
// agent's "decode" section.
func (c Config) Validate() error {
	if len(c.Subscriptions) == 0 {
		return config.Invalid(keyPrefix+"subscriptions", "[]", "at least one subscription")
	}
	for i, s := range c.Subscriptions {
		if _, err := compile(s, fmt.Sprintf("%ssubscriptions[%d].", keyPrefix, i)); err != nil {
			return err
		}
	}
	if c.MaxPayloadBytes < 1 || c.MaxPayloadBytes > maxPayloadLimit {
		return config.Invalid(keyPrefix+"max_payload_bytes", c.MaxPayloadBytes, "1B to 256MiB")
	}
	if c.MaxClockSkew < 0 {
		return config.Invalid(keyPrefix+"max_clock_skew", c.MaxClockSkew, "a duration of 0s or more, e.g. 5m")
	}
	return nil
}

// Placeholders of a template.
const (
	placeSite   = "{site}"
	placeDevice = "{device}"
	placeMetric = "{metric}"
)

type levelKind uint8

const (
	levelLiteral levelKind = iota
	levelSite
	levelDevice
	levelMetric
)

type level struct {
	kind levelKind
	lit  string
}

var unitNanos = map[string]int64{UnitSeconds: 1e9, UnitMillis: 1e6, UnitMicros: 1e3, UnitNanos: 1, UnitRFC3339: 0}

// compile checks one subscription and turns it into the form Decode uses.
// key is the YAML key prefix for errors, e.g. "decode.subscriptions[0].".
func compile(s Subscription, key string) (*subscription, error) {
	if err := validateFilter(s.Topic); err != nil {
		return nil, config.Invalid(key+"topic", s.Topic, "an MQTT topic filter such as devices/+/telemetry ("+err.Error()+")")
	}
	sub := &subscription{metrics: map[string]metricName{}, restMetrics: map[string]metricName{}, format: s.Format}
	if sub.format == "" {
		sub.format = DefaultFormat
	}
	switch sub.format {
	case FormatJSON, FormatSenML, FormatTasmota, FormatZigbee2MQTT, FormatHomie, FormatNumeric:
	case FormatSparkplug:
		if s.Template != "" || s.Device != "" {
			return nil, config.Invalid(key+"template", s.Template, `"" for sparkplug: the topic namespace names node and device (docs/payloads.md)`)
		}
		if !strings.HasPrefix(s.Topic, "spBv1.0/") && s.Topic != "#" {
			return nil, config.Invalid(key+"topic", s.Topic, "a filter inside the Sparkplug namespace, e.g. spBv1.0/#")
		}
	default:
		return nil, config.Invalid(key+"format", s.Format, "json, senml, sparkplug, tasmota, zigbee2mqtt, homie or numeric")
	}
	if sub.format != FormatSparkplug {
		levels, err := parseTemplate(s.Template)
		if err != nil {
			return nil, config.Invalid(key+"template", s.Template,
				"topic levels separated by /, each a literal or one of {site}, {device}, {metric} ("+err.Error()+")")
		}
		if err := templateFitsFilter(levels, s.Topic); err != nil {
			return nil, config.Invalid(key+"template", s.Template, "a template that matches only topics of the filter "+s.Topic+" ("+err.Error()+")")
		}
		sub.levels = levels
		for _, l := range levels {
			switch l.kind {
			case levelDevice:
				sub.hasDevice = true
			case levelMetric:
				sub.hasMetric = true
			}
		}
		// Zigbee2MQTT friendly names and Homie node/property pairs span
		// several levels: the template's last placeholder takes the rest.
		if last := levels[len(levels)-1]; last.kind != levelLiteral && (sub.format == FormatZigbee2MQTT || sub.format == FormatHomie) {
			sub.restLast = true
		}
		switch sub.format {
		case FormatHomie:
			if !sub.hasDevice || !sub.hasMetric || levels[len(levels)-1].kind != levelMetric {
				return nil, config.Invalid(key+"template", s.Template, "a template ending in {device}/{metric}, e.g. homie/5/{device}/{metric}")
			}
		case FormatNumeric:
			if !sub.hasMetric {
				return nil, config.Invalid(key+"template", s.Template, "a template with {metric}: a plain number names no metric itself")
			}
		case FormatSenML, FormatTasmota, FormatZigbee2MQTT:
			if sub.hasMetric {
				return nil, config.Invalid(key+"template", s.Template, "a template without {metric}: "+sub.format+" payloads name their metrics")
			}
		}
		switch {
		case sub.hasDevice && s.Device != "":
			return nil, config.Invalid(key+"device", s.Device, `"" when the template has {device}`)
		case !sub.hasDevice && s.Device == "" && sub.format == FormatSenML:
			sub.deviceFromBase = true
		case !sub.hasDevice && s.Device == "":
			return nil, config.Invalid(key+"device", s.Device, "a device name, since the template has no {device}")
		case s.Device != "":
			if err := validName("device", s.Device); err != nil {
				return nil, config.Invalid(key+"device", s.Device, "a name without dots, spaces, wildcards or control characters")
			}
			sub.device = s.Device
		}
	}
	sub.sep = s.Separator
	if sub.sep == "" && (sub.format == FormatTasmota || sub.format == FormatZigbee2MQTT || sub.format == FormatHomie) {
		sub.sep = "_"
	}
	if err := validName("separator", "x"+sub.sep+"x"); err != nil {
		return nil, config.Invalid(key+"separator", s.Separator, "characters allowed in metric names (no dots, spaces or wildcards), e.g. _")
	}
	if s.Arrays && sub.format != FormatJSON {
		return nil, config.Invalid(key+"arrays", s.Arrays, "false unless the format is json")
	}
	if sub.format == FormatJSON && sub.hasMetric && (s.Separator != "" || s.Arrays || len(s.Ignore) > 0) {
		return nil, config.Invalid(key+"template", s.Template, "a template without {metric} when separator, arrays or ignore is set: they describe objects of several metrics")
	}
	sub.arrays = s.Arrays
	sub.rebirth = s.Rebirth
	sub.ignore = map[string]bool{}
	for _, f := range defaultIgnore[sub.format] {
		sub.ignore[f] = true
	}
	for _, f := range s.Ignore {
		sub.ignore[f] = true
	}
	if s.TimestampField == "" {
		s.TimestampField = defaultTimestampField[sub.format]
	}
	sub.naiveUTC = sub.format == FormatTasmota
	sub.onOff = sub.format == FormatTasmota || sub.format == FormatZigbee2MQTT
	sub.tsField = s.TimestampField
	if sub.tsField == "" {
		sub.tsField = DefaultTimestampField
	}
	unit := s.TimestampUnit
	if unit == "" {
		unit = DefaultTimestampUnit
	}
	mult, ok := unitNanos[unit]
	if !ok {
		return nil, config.Invalid(key+"timestamp_unit", s.TimestampUnit, "s, ms, us, ns or rfc3339")
	}
	sub.tsMult = mult
	metrics := make([]string, 0, len(s.Units))
	for m := range s.Units {
		metrics = append(metrics, m)
	}
	slices.Sort(metrics) // report the same key on every run
	sub.units = make(map[string]string, len(s.Units))
	for _, m := range metrics {
		u := s.Units[m]
		if err := validName("metric", m); err != nil {
			return nil, config.Invalid(key+"units", m, "metric names without dots, spaces, wildcards or control characters")
		}
		if len(u) > schemas.MaxTokenLen || !utf8.ValidString(u) {
			return nil, config.Invalid(key+"units."+m, u, fmt.Sprintf("UTF-8 text of at most %d bytes", schemas.MaxTokenLen))
		}
		sub.units[m] = u
	}
	return sub, nil
}

// validName is schemas.ValidateToken plus UTF-8 validity, which Arrow and
// Parquet strings need.
func validName(what, v string) error {
	if err := schemas.ValidateToken(what, v); err != nil {
		return err
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", schemas.ErrBadToken, what, v)
	}
	return nil
}

func validateFilter(f string) error {
	if f == "" {
		return fmt.Errorf("empty")
	}
	if len(f) > 65535 {
		return fmt.Errorf("longer than 65535 bytes")
	}
	if strings.IndexByte(f, 0) >= 0 || !utf8.ValidString(f) {
		return fmt.Errorf("not valid UTF-8 text")
	}
	lv := strings.Split(f, "/")
	for i, l := range lv {
		switch {
		case l == "#" && i != len(lv)-1:
			return fmt.Errorf("# must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return fmt.Errorf("wildcard %q must be a whole level", l)
		}
	}
	return nil
}

func parseTemplate(t string) ([]level, error) {
	if t == "" {
		return nil, fmt.Errorf("empty")
	}
	var levels []level
	seen := map[levelKind]bool{}
	for _, l := range strings.Split(t, "/") {
		var k levelKind
		switch l {
		case placeSite:
			k = levelSite
		case placeDevice:
			k = levelDevice
		case placeMetric:
			k = levelMetric
		default:
			if strings.ContainsAny(l, "{}") {
				return nil, fmt.Errorf("%q is not a placeholder", l)
			}
			if strings.ContainsAny(l, "+#") {
				return nil, fmt.Errorf("wildcards belong in the topic filter, not the template")
			}
			levels = append(levels, level{kind: levelLiteral, lit: l})
			continue
		}
		if seen[k] {
			return nil, fmt.Errorf("%s appears twice", l)
		}
		seen[k] = true
		levels = append(levels, level{kind: k})
	}
	return levels, nil
}

// templateFitsFilter checks that every topic the template can match is one
// the filter subscribes to, so a template typo fails at start instead of
// turning every message into unmatched_topic.
func templateFitsFilter(levels []level, filter string) error {
	fl := strings.Split(filter, "/")
	for i, l := range levels {
		if i >= len(fl) {
			return fmt.Errorf("the template has more levels than the filter")
		}
		switch f := fl[i]; {
		case f == "#":
			return nil
		case f == "+":
		case l.kind != levelLiteral:
			return fmt.Errorf("a placeholder stands where the filter has the fixed level %q", f)
		case l.lit != f:
			return fmt.Errorf("level %d is %q in the template and %q in the filter", i+1, l.lit, f)
		}
	}
	if len(fl) > len(levels) && !(len(fl) == len(levels)+1 && fl[len(levels)] == "#") {
		return fmt.Errorf("the template has fewer levels than the filter")
	}
	return nil
}
