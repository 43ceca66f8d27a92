package decode

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/updraft-io/updraft/schemas"
)

// Interning caps: beyond them new names are still accepted but no longer
// remembered, so a stream of random names cannot grow memory without bound.
const (
	maxInternedDevices = 16384
	maxInternedMetrics = 4096
)

// maxDetailName bounds how much of a device-supplied name goes into a
// reject's detail.
const maxDetailName = 64

type subscription struct {
	levels    []level
	hasDevice bool
	hasMetric bool
	device    string // fixed device when !hasDevice
	tsField   string
	tsMult    int64 // nanoseconds per timestamp unit; 0 for rfc3339
	units     map[string]string
	metrics   map[string]metricName // interned valid metric names with their units

	format         string
	restLast       bool // the last placeholder takes the rest of the topic
	deviceFromBase bool // senml: the device is the base name
	sep            string
	arrays         bool
	rebirth        bool
	ignore         map[string]bool
	naiveUTC       bool // timestamps without a zone are UTC (Tasmota)
	onOff          bool // "ON" and "OFF" are 1 and 0
	// restMetrics maps a Homie node/property to its metric name.
	restMetrics map[string]metricName
}

type metricName struct {
	name, unit string
}

// Decoder decodes MQTT messages into readings. It is not safe for concurrent
// use: its intern tables and scratch space are unsynchronised so the hot
// path takes no lock. Give each decoding goroutine its own Decoder.
type Decoder struct {
	subs       []*subscription
	edge       schemas.EdgeID
	now        func() time.Time
	maxPayload int
	skew       int64
	devices    map[string]string
	keyBuf     []byte
	valBuf     []byte
	pathBuf    []byte
	onCommand  func(Command)
	sp         sparkplugState
	homieUnits map[string]map[string]string // device -> metric -> unit, from $description
	units      map[string]string            // units payloads name, interned
	senBN      []byte                       // SenML base name, reused
	senBU      []byte                       // SenML base unit, reused
}

// New builds a Decoder for the edge. now is the clock for receive times and
// the future-timestamp check; nil means time.Now.
func New(cfg Config, edge schemas.EdgeID, now func() time.Time) (*Decoder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := edge.Validate(); err != nil {
		return nil, fmt.Errorf("new decoder: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	d := &Decoder{
		edge:       edge,
		now:        now,
		maxPayload: int(cfg.MaxPayloadBytes),
		skew:       int64(cfg.MaxClockSkew),
		devices:    map[string]string{},
		onCommand:  cfg.OnCommand,
		homieUnits: map[string]map[string]string{},
		units:      map[string]string{},
	}
	d.sp.init()
	for i, s := range cfg.Subscriptions {
		sub, err := compile(s, fmt.Sprintf("%ssubscriptions[%d].", keyPrefix, i))
		if err != nil {
			return nil, err
		}
		d.subs = append(d.subs, sub)
	}
	return d, nil
}

// Decode appends the readings of one message to dst and returns the
// extended slice. On a reject it returns dst unchanged (nothing of the
// message is kept) and a *Reject. The readings do not refer to payload, so
// the caller may reuse it.
func (d *Decoder) Decode(dst []schemas.Reading, topic string, payload []byte) ([]schemas.Reading, error) {
	sub, device, metric, rej := d.match(topic)
	if rej != nil {
		if rej == errIgnored {
			return dst, nil
		}
		return dst, rej
	}
	if len(payload) > d.maxPayload {
		return dst, reject(ReasonOversized, fmt.Sprintf("payload is %d bytes, at most %d allowed (decode.max_payload_bytes)", len(payload), d.maxPayload))
	}
	var out []schemas.Reading
	switch sub.format {
	case FormatJSON:
		if sub.hasMetric || (sub.sep == "" && !sub.arrays && len(sub.ignore) == 0) {
			out, rej = d.decodeJSON(dst, sub, device, metric, payload)
		} else {
			out, rej = d.decodeNested(dst, sub, device, payload)
		}
	case FormatTasmota, FormatZigbee2MQTT:
		out, rej = d.decodeNested(dst, sub, device, payload)
	case FormatSenML:
		out, rej = d.decodeSenML(dst, sub, device, payload)
	case FormatHomie:
		out, rej = d.decodeHomie(dst, sub, device, metric, payload)
	case FormatNumeric:
		out, rej = d.decodeNumeric(dst, sub, device, metric, payload)
	case FormatSparkplug:
		out, rej = d.decodeSparkplug(dst, sub, topic, payload)
	}
	if rej != nil {
		return dst, rej
	}
	return out, nil
}

// errIgnored marks a topic that carries no readings by its format's
// convention (a Zigbee2MQTT bridge message, a Homie attribute): Decode
// returns no readings and no error, so the message is acknowledged.
var errIgnored = &Reject{Reason: "ignored"}

// match finds the first subscription whose template matches topic and
// returns the device and metric it names (metric is zero unless the
// template has {metric}).
func (d *Decoder) match(topic string) (*subscription, string, metricName, *Reject) {
	for _, sub := range d.subs {
		if sub.format == FormatSparkplug {
			if strings.HasPrefix(topic, "spBv1.0/") {
				return sub, "", metricName{}, nil
			}
			continue
		}
		var site, device, metric string
		rest := topic
		ok := true
		for i, l := range sub.levels {
			seg := rest
			if i == len(sub.levels)-1 && sub.restLast {
				// takes the rest
			} else if i < len(sub.levels)-1 {
				j := strings.IndexByte(rest, '/')
				if j < 0 {
					ok = false
					break
				}
				seg, rest = rest[:j], rest[j+1:]
			} else if strings.IndexByte(rest, '/') >= 0 {
				ok = false
				break
			}
			switch l.kind {
			case levelLiteral:
				ok = seg == l.lit
			case levelSite:
				site = seg
			case levelDevice:
				device = seg
			case levelMetric:
				metric = seg
			}
			if !ok {
				break
			}
		}
		if !ok {
			continue
		}
		if sub.restLast {
			if m, ok := sub.restMetrics[metric]; ok && sub.format == FormatHomie && !strings.HasPrefix(device, "$") {
				metric = m.name // a property seen before: skip the renaming
			} else {
				raw := metric
				var ignored bool
				if device, metric, ignored = sub.restNames(device, metric); ignored {
					return nil, "", metricName{}, errIgnored
				}
				if sub.format == FormatHomie && metric != raw && len(sub.restMetrics) < maxInternedMetrics {
					if m, err := sub.internMetric(metric); err == nil {
						sub.restMetrics[strings.Clone(raw)] = m
					}
				}
			}
		}
		if sub.hasDevice {
			name, err := d.internDevice(device)
			if err != nil {
				return nil, "", metricName{}, reject(ReasonBadToken, "topic "+quote(topic)+": "+err.Error())
			}
			device = name
		} else {
			device = sub.device
		}
		if site != "" && site != d.edge.Site {
			return nil, "", metricName{}, reject(ReasonUnmatchedTopic,
				fmt.Sprintf("topic %s names site %s, this edge serves site %q", quote(topic), quote(site), d.edge.Site))
		}
		var m metricName
		if sub.hasMetric {
			var err error
			if m, err = sub.internMetric(metric); err != nil {
				return nil, "", metricName{}, reject(ReasonBadToken, "topic "+quote(topic)+": "+err.Error())
			}
		}
		return sub, device, m, nil
	}
	return nil, "", metricName{}, reject(ReasonUnmatchedTopic, "topic "+quote(topic)+" matches no subscription template")
}

func (d *Decoder) internDevice(seg string) (string, error) {
	if name, ok := d.devices[seg]; ok {
		return name, nil
	}
	if err := validName("device", seg); err != nil {
		return "", err
	}
	name := strings.Clone(seg) // do not pin the message's topic string
	if len(d.devices) < maxInternedDevices {
		d.devices[name] = name
	}
	return name, nil
}

// internMetric returns the canonical name and unit of a metric. The lookup
// by a []byte conversion does not allocate.
func (s *subscription) internMetric(name string) (metricName, error) {
	if m, ok := s.metrics[name]; ok {
		return m, nil
	}
	if err := validName("metric", name); err != nil {
		return metricName{}, err
	}
	m := metricName{name: strings.Clone(name), unit: s.unitOf(name)}
	if len(s.metrics) < maxInternedMetrics {
		s.metrics[m.name] = m
	}
	return m, nil
}

func (s *subscription) internMetricBytes(name []byte) (metricName, error) {
	if m, ok := s.metrics[string(name)]; ok {
		return m, nil
	}
	return s.internMetric(string(name))
}

// semErr remembers the first problem with a field while the scan goes on,
// so a syntax error later in the payload still wins: a payload that is not
// JSON is reported as such, whatever else is wrong with it.
type semErr struct {
	reason Reason
	detail string
}

func (e *semErr) set(reason Reason, format string, args ...any) {
	if e.reason == "" {
		e.reason, e.detail = reason, fmt.Sprintf(format, args...)
	}
}

func (e *semErr) keep(r *Reject) {
	if r != nil && e.reason == "" {
		e.reason, e.detail = r.Reason, r.Detail
	}
}

func (d *Decoder) decodeJSON(dst []schemas.Reading, sub *subscription, device string, metric metricName, payload []byte) ([]schemas.Reading, *Reject) {
	start := len(dst)
	s := scanner{b: payload}
	var sem semErr
	var ts int64
	haveTS := false
	malformed := func(what string) *Reject {
		return reject(ReasonMalformedJSON, fmt.Sprintf("%s at byte %d", what, s.i))
	}

	s.ws()
	if s.i == len(s.b) {
		return dst, malformed("empty payload")
	}
	if s.peek() != '{' {
		if !sub.hasMetric {
			if !s.skip(0) {
				return dst, malformed("invalid JSON")
			}
			s.ws()
			if s.i != len(s.b) {
				return dst, malformed("data after the JSON value")
			}
			return dst, reject(ReasonNotAnObject, "payload is not a JSON object of fields")
		}
		v, kind, ok := s.value(&d.valBuf)
		if !ok {
			return dst, malformed("invalid JSON")
		}
		s.ws()
		if s.i != len(s.b) {
			return dst, malformed("data after the JSON value")
		}
		if r := valueReject(kind, nil); r != nil {
			return dst, r
		}
		dst = append(dst, d.reading(device, metric, v))
		return d.finish(dst, start, 0, false, &sem)
	}

	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
	} else {
		for {
			if s.peek() != '"' {
				return dst, malformed("expected a field name")
			}
			raw, esc, ok := s.str()
			if !ok {
				return dst, malformed("invalid string")
			}
			name := raw
			if esc {
				d.keyBuf = unescape(d.keyBuf[:0], raw)
				name = d.keyBuf
			}
			s.ws()
			if s.peek() != ':' {
				return dst, malformed("expected ':'")
			}
			s.i++
			s.ws()
			switch {
			case string(name) == sub.tsField:
				if haveTS {
					sem.set(ReasonMalformedJSON, "field %s appears twice", quoteBytes(name))
				}
				haveTS = true
				var r *Reject
				if ts, r, ok = d.timestamp(&s, sub); !ok {
					return dst, malformed("invalid JSON")
				}
				sem.keep(r)
			case sub.hasMetric:
				if string(name) != "value" {
					if !s.skip(0) {
						return dst, malformed("invalid JSON")
					}
					break
				}
				v, kind, ok := s.value(&d.valBuf)
				if !ok {
					return dst, malformed("invalid JSON")
				}
				if len(dst) > start {
					sem.set(ReasonMalformedJSON, `field "value" appears twice`)
				} else if r := valueReject(kind, name); r != nil {
					sem.keep(r)
				} else {
					dst = append(dst, d.reading(device, metric, v))
				}
			default:
				v, kind, ok := s.value(&d.valBuf)
				if !ok {
					return dst, malformed("invalid JSON")
				}
				if sem.reason != "" {
					break
				}
				if r := valueReject(kind, name); r != nil {
					sem.keep(r)
					break
				}
				m, err := sub.internMetricBytes(name)
				if err != nil {
					sem.set(ReasonBadToken, "field %s: %v", quoteBytes(name), err)
					break
				}
				dst = append(dst, d.reading(device, m, v))
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.i++
				s.ws()
				continue
			case '}':
				s.i++
			default:
				return dst, malformed("expected ',' or '}'")
			}
			break
		}
	}
	s.ws()
	if s.i != len(s.b) {
		return dst, malformed("data after the JSON object")
	}
	if sem.reason == "" && !sub.hasMetric {
		if name, dup := duplicateMetric(dst[start:]); dup {
			sem.set(ReasonMalformedJSON, "field %s appears twice", quote(name))
		}
	}
	return d.finish(dst, start, ts, haveTS, &sem)
}

// finish applies the message-wide checks and stamps the readings' time.
func (d *Decoder) finish(dst []schemas.Reading, start int, ts int64, haveTS bool, sem *semErr) ([]schemas.Reading, *Reject) {
	if sem.reason != "" {
		return dst, reject(sem.reason, sem.detail)
	}
	if len(dst) == start {
		return dst, reject(ReasonNoReadings, "the message holds no values")
	}
	now := d.now().UnixNano()
	if !haveTS {
		ts = now
	} else if ts-now > d.skew {
		return dst, reject(ReasonFutureTimestamp, fmt.Sprintf("timestamp %s is %s ahead of this edge's clock (decode.max_clock_skew is %s)",
			time.Unix(0, ts).UTC().Format(time.RFC3339Nano), time.Duration(ts-now), time.Duration(d.skew)))
	}
	for i := start; i < len(dst); i++ {
		dst[i].TS = ts
	}
	return dst, nil
}

func (d *Decoder) reading(device string, m metricName, v float64) schemas.Reading {
	return schemas.Reading{
		Region: d.edge.Region, Site: d.edge.Site, Edge: d.edge.Edge,
		Device: device, Metric: m.name, Value: v, Unit: m.unit,
	}
}

// valueReject describes a bad value of the named field (nil: the payload
// itself is the value).
func valueReject(kind valueKind, field []byte) *Reject {
	if kind == valueNumber {
		return nil
	}
	where := "payload"
	if field != nil {
		where = "field " + quoteBytes(field)
	}
	switch kind {
	case valueNonNumeric:
		return reject(ReasonNonNumeric, where+" is not a number or boolean")
	case valueNonFinite:
		return reject(ReasonNonFinite, where+" is NaN, infinite or beyond float64 range")
	}
	return nil
}

// duplicateMetric reports a metric given twice in one object, which would
// otherwise become two readings for the same device, metric and time.
func duplicateMetric(rs []schemas.Reading) (string, bool) {
	if len(rs) <= 16 {
		for i := 1; i < len(rs); i++ {
			for j := 0; j < i; j++ {
				if rs[i].Metric == rs[j].Metric {
					return rs[i].Metric, true
				}
			}
		}
		return "", false
	}
	seen := make(map[string]struct{}, len(rs))
	for _, r := range rs {
		if _, ok := seen[r.Metric]; ok {
			return r.Metric, true
		}
		seen[r.Metric] = struct{}{}
	}
	return "", false
}

// Timestamps before 1970 or after 2262 do not fit int64 nanoseconds.
var (
	minTime = time.Unix(0, 1)
	maxTime = time.Unix(0, math.MaxInt64)
)

// timestamp reads the timestamp field's value. ok is false on a syntax
// error; r is set when the value is not a usable time.
func (d *Decoder) timestamp(s *scanner, sub *subscription) (ts int64, r *Reject, ok bool) {
	field := sub.tsField
	switch c := s.peek(); {
	case c == '-' || isDigit(c):
		text, isInt, ok := s.number()
		if !ok {
			return 0, nil, false
		}
		if sub.tsMult == 0 {
			return 0, reject(ReasonBadTimestamp, "field "+quote(field)+" is a number, the subscription's timestamp_unit is rfc3339"), true
		}
		ts, good := numericTS(text, isInt, sub.tsMult)
		if !good {
			return 0, reject(ReasonBadTimestamp, fmt.Sprintf("field %s: %s is not a time after 1970 and before 2262 in the unit %s",
				quote(field), quoteBytes(text), unitName(sub.tsMult))), true
		}
		return ts, nil, true
	case c == '"':
		raw, esc, ok := s.str()
		if !ok {
			return 0, nil, false
		}
		if esc {
			d.valBuf = unescape(d.valBuf[:0], raw)
			raw = d.valBuf
		}
		text := unsafe.String(unsafe.SliceData(raw), len(raw))
		var t time.Time
		var err error
		if sub.naiveUTC && !hasZone(raw) {
			t, err = time.Parse("2006-01-02T15:04:05.999999999", text)
		} else {
			t, err = time.Parse(time.RFC3339Nano, text)
		}
		if err != nil || t.Before(minTime) || t.After(maxTime) {
			return 0, reject(ReasonBadTimestamp, fmt.Sprintf("field %s: %s is not an RFC 3339 time between 1970 and 2262", quote(field), quoteBytes(raw))), true
		}
		return t.UnixNano(), nil, true
	}
	if !s.skip(0) {
		return 0, nil, false
	}
	return 0, reject(ReasonBadTimestamp, "field "+quote(field)+" is not a number or an RFC 3339 string"), true
}

// hasZone reports whether a time text ends in a zone (Z or ±hh:mm).
func hasZone(b []byte) bool {
	if len(b) > 0 && (b[len(b)-1] == 'Z' || b[len(b)-1] == 'z') {
		return true
	}
	return len(b) >= 6 && (b[len(b)-6] == '+' || b[len(b)-6] == '-') && b[len(b)-3] == ':'
}

func unitName(mult int64) string {
	for u, m := range unitNanos {
		if m == mult {
			return u
		}
	}
	return "?"
}

// numericTS converts a JSON number in units of mult nanoseconds to a
// positive int64 of nanoseconds. Decimal fractions are converted exactly
// (digits below a nanosecond are dropped), so "1712345678.123456789" s keeps
// every digit; only exponent forms go through float64.
func numericTS(text []byte, isInt bool, mult int64) (int64, bool) {
	if text[0] == '-' {
		return 0, false
	}
	exp := false
	for _, c := range text {
		if c == 'e' || c == 'E' {
			exp = true
			break
		}
	}
	if exp {
		f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(text), len(text)), 64)
		ns := f * float64(mult)
		if err != nil || !(ns >= 1) || ns >= math.MaxInt64 {
			return 0, false
		}
		return int64(ns), true
	}
	var whole int64
	i := 0
	for ; i < len(text) && text[i] != '.'; i++ {
		if whole > (math.MaxInt64-9)/10 {
			return 0, false
		}
		whole = whole*10 + int64(text[i]-'0')
	}
	if whole > math.MaxInt64/mult {
		return 0, false
	}
	ns := whole * mult
	if !isInt {
		// Each fraction digit is worth a tenth of the one before; digits
		// below one nanosecond are dropped.
		var frac int64
		for step, j := mult/10, i+1; step > 0 && j < len(text); step, j = step/10, j+1 {
			frac += int64(text[j]-'0') * step
		}
		if ns > math.MaxInt64-frac {
			return 0, false
		}
		ns += frac
	}
	return ns, ns > 0
}

func quote(s string) string {
	if len(s) > maxDetailName {
		return fmt.Sprintf("%q...", s[:maxDetailName])
	}
	return fmt.Sprintf("%q", s)
}

func quoteBytes(b []byte) string { return quote(string(b)) }
