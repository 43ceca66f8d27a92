package decode

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// defaultIgnore lists, per format, fields that describe a device rather
// than measure something; they are skipped instead of dead-lettering every
// message for holding text.
var defaultIgnore = map[string][]string{
	FormatTasmota:     {"TempUnit", "PressureUnit", "SpeedUnit", "TotalStartTime", "Id", "IDs"},
	FormatZigbee2MQTT: {"update", "update_available", "color_mode", "power_on_behavior", "action", "device"},
}

// defaultTimestampField is each format's own name for the event time.
var defaultTimestampField = map[string]string{
	FormatJSON:        DefaultTimestampField,
	FormatTasmota:     "Time",
	FormatZigbee2MQTT: "last_seen",
	FormatNumeric:     DefaultTimestampField,
	FormatHomie:       DefaultTimestampField,
	FormatSenML:       DefaultTimestampField,
	FormatSparkplug:   DefaultTimestampField,
}

// tasmotaUnits are the units Tasmota's sensor drivers report in, by key.
// Temperatures follow the payload's TempUnit.
var tasmotaUnits = map[string]string{
	"Temperature": "Cel", "DewPoint": "Cel", "Humidity": "%RH", "Pressure": "hPa", "SeaPressure": "hPa",
	"Power": "W", "ApparentPower": "VA", "ReactivePower": "var", "Voltage": "V", "Current": "A",
	"Total": "kW.h", "Today": "kW.h", "Yesterday": "kW.h", "Illuminance": "lx", "CarbonDioxide": "ppm",
	"Frequency": "Hz",
}

// sanitizeName turns a name chosen by a person (a Zigbee2MQTT friendly
// name, a Sparkplug metric name) into a token: spaces, dots and wildcards
// become underscores.
func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '.', '*', '>', '\t':
			return '_'
		}
		return r
	}, s)
}

// restNames applies the conventions of the formats whose last template
// placeholder spans several topic levels. ignored reports a topic that
// carries no readings by the format's convention.
func (s *subscription) restNames(device, metric string) (string, string, bool) {
	switch s.format {
	case FormatZigbee2MQTT:
		if device == "bridge" || strings.HasPrefix(device, "bridge/") {
			return "", "", true
		}
		for _, suffix := range []string{"/set", "/get", "/availability"} {
			if strings.HasSuffix(device, suffix) || strings.Contains(device, suffix+"/") {
				return "", "", true
			}
		}
		return sanitizeName(device), metric, false
	case FormatHomie:
		if metric == homieDescription {
			return device, metric, false
		}
		if strings.HasPrefix(device, "$") || !strings.Contains(metric, "/") || strings.HasSuffix(metric, "/set") ||
			strings.HasPrefix(metric, "$") || strings.Contains(metric, "/$") {
			return "", "", true
		}
		return device, strings.ReplaceAll(metric, "/", s.sep), false
	}
	return device, metric, false
}

// sample is what one JSON object of readings carries besides its values.
type sample struct {
	ts       int64
	haveTS   bool
	tempUnit string // Tasmota's TempUnit
}

// decodeNested reads JSON whose objects nest (flattened with the
// separator), Tasmota and Zigbee2MQTT payloads, and arrays of samples.
func (d *Decoder) decodeNested(dst []schemas.Reading, sub *subscription, device string, payload []byte) ([]schemas.Reading, *Reject) {
	start := len(dst)
	s := scanner{b: payload}
	var sem semErr
	malformed := func(what string) *Reject {
		return reject(ReasonMalformedJSON, fmt.Sprintf("%s at byte %d", what, s.i))
	}
	now := d.now().UnixNano()
	s.ws()
	if s.i == len(s.b) {
		return dst, malformed("empty payload")
	}
	var ok bool
	switch c := s.peek(); {
	case c == '{':
		if dst, ok = d.sample(dst, &s, sub, device, &sem, now); !ok {
			return dst[:start], malformed("invalid JSON")
		}
	case c == '[' && sub.arrays:
		s.i++
		s.ws()
		if s.peek() == ']' {
			s.i++
			break
		}
		for {
			if s.peek() != '{' {
				if !s.skip(0) {
					return dst[:start], malformed("invalid JSON")
				}
				sem.set(ReasonNotAnObject, "an element of the array is not an object of fields")
			} else if dst, ok = d.sample(dst, &s, sub, device, &sem, now); !ok {
				return dst[:start], malformed("invalid JSON")
			}
			s.ws()
			if s.peek() == ',' {
				s.i++
				s.ws()
				continue
			}
			if s.peek() != ']' {
				return dst[:start], malformed("expected ',' or ']'")
			}
			s.i++
			break
		}
	default:
		if !s.skip(0) {
			return dst, malformed("invalid JSON")
		}
		s.ws()
		if s.i != len(s.b) {
			return dst, malformed("data after the JSON value")
		}
		return dst, reject(ReasonNotAnObject, "payload is not a JSON object of fields")
	}
	s.ws()
	if s.i != len(s.b) {
		return dst[:start], malformed("data after the JSON value")
	}
	if sem.reason != "" {
		return dst[:start], reject(sem.reason, sem.detail)
	}
	if len(dst) == start {
		return dst, reject(ReasonNoReadings, "the message holds no values")
	}
	return dst, nil
}

// sample reads one object of readings and stamps them with its time.
func (d *Decoder) sample(dst []schemas.Reading, s *scanner, sub *subscription, device string, sem *semErr, now int64) ([]schemas.Reading, bool) {
	start := len(dst)
	var st sample
	d.pathBuf = d.pathBuf[:0]
	dst, ok := d.walkObject(dst, s, sub, device, sem, &st, 0)
	if !ok || sem.reason != "" {
		return dst, ok
	}
	if name, dup := duplicateMetric(dst[start:]); dup {
		sem.set(ReasonMalformedJSON, "field %s appears twice", quote(name))
		return dst, true
	}
	ts := now
	if st.haveTS {
		if st.ts-now > d.skew {
			sem.set(ReasonFutureTimestamp, "timestamp %s is %s ahead of this edge's clock (decode.max_clock_skew is %s)",
				fmtTime(st.ts), fmtDuration(st.ts-now), fmtDuration(d.skew))
			return dst, true
		}
		ts = st.ts
	}
	for i := start; i < len(dst); i++ {
		dst[i].TS = ts
		if st.tempUnit == "F" && dst[i].Unit == "Cel" {
			dst[i].Unit = "[degF]"
		}
	}
	return dst, true
}

// walkObject reads the object at s.i; d.pathBuf holds the flattened name
// of the object itself.
func (d *Decoder) walkObject(dst []schemas.Reading, s *scanner, sub *subscription, device string, sem *semErr, st *sample, depth int) ([]schemas.Reading, bool) {
	base := len(d.pathBuf)
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		return dst, true
	}
	for {
		if s.peek() != '"' {
			return dst, false
		}
		raw, esc, ok := s.str()
		if !ok {
			return dst, false
		}
		key := raw
		if esc {
			d.keyBuf = unescape(d.keyBuf[:0], raw)
			key = d.keyBuf
		}
		s.ws()
		if s.peek() != ':' {
			return dst, false
		}
		s.i++
		s.ws()
		d.pathBuf = d.pathBuf[:base]
		if base > 0 {
			d.pathBuf = append(d.pathBuf, sub.sep...)
		}
		d.pathBuf = append(d.pathBuf, key...)
		if dst, ok = d.field(dst, s, sub, device, sem, st, key, depth); !ok {
			return dst, false
		}
		d.pathBuf = d.pathBuf[:base]
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
			continue
		case '}':
			s.i++
			return dst, true
		}
		return dst, false
	}
}

// walkArray reads the array at s.i, naming its elements by 1-based index.
func (d *Decoder) walkArray(dst []schemas.Reading, s *scanner, sub *subscription, device string, sem *semErr, st *sample, depth int) ([]schemas.Reading, bool) {
	base := len(d.pathBuf)
	s.i++
	s.ws()
	if s.peek() == ']' {
		s.i++
		return dst, true
	}
	for n := 1; ; n++ {
		d.pathBuf = append(d.pathBuf[:base], sub.sep...)
		d.pathBuf = strconv.AppendInt(d.pathBuf, int64(n), 10)
		var ok bool
		if dst, ok = d.field(dst, s, sub, device, sem, st, nil, depth); !ok {
			return dst, false
		}
		d.pathBuf = d.pathBuf[:base]
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
			continue
		case ']':
			s.i++
			return dst, true
		}
		return dst, false
	}
}

// field reads one value named d.pathBuf (key is its own key, nil for an
// array element).
func (d *Decoder) field(dst []schemas.Reading, s *scanner, sub *subscription, device string, sem *semErr, st *sample, key []byte, depth int) ([]schemas.Reading, bool) {
	path := d.pathBuf
	if depth == 0 && key != nil {
		if string(key) == sub.tsField {
			if st.haveTS {
				sem.set(ReasonMalformedJSON, "field %s appears twice", quoteBytes(key))
			}
			st.haveTS = true
			ts, r, ok := d.timestamp(s, sub)
			st.ts = ts
			sem.keep(r)
			return dst, ok
		}
		if sub.format == FormatTasmota && string(key) == "TempUnit" && s.peek() == '"' {
			raw, _, ok := s.str()
			if len(raw) == 1 {
				st.tempUnit = string(raw)
			}
			return dst, ok
		}
	}
	if len(sub.ignore) > 0 && (key != nil && sub.ignore[string(key)] || sub.ignore[string(path)]) {
		return dst, s.skip(depth)
	}
	c := s.peek()
	if (c == '{' || c == '[') && sub.sep != "" {
		if depth+1 >= maxDepth {
			return dst, false
		}
		if c == '{' {
			return d.walkObject(dst, s, sub, device, sem, st, depth+1)
		}
		return d.walkArray(dst, s, sub, device, sem, st, depth+1)
	}
	var v float64
	var kind valueKind
	if c == '"' && sub.onOff {
		raw, esc, ok := s.str()
		if !ok {
			return dst, false
		}
		if esc {
			d.valBuf = unescape(d.valBuf[:0], raw)
			raw = d.valBuf
		}
		switch string(raw) {
		case "ON":
			v = 1
		case "OFF":
			v = 0
		default:
			v, kind = parseNumericString(raw)
		}
	} else {
		var ok bool
		if v, kind, ok = s.value(&d.valBuf); !ok {
			return dst, false
		}
	}
	if sem.reason != "" {
		return dst, true
	}
	if r := valueReject(kind, path); r != nil {
		sem.keep(r)
		return dst, true
	}
	m, err := sub.internMetricBytes(path)
	if err != nil {
		sem.set(ReasonBadToken, "field %s: %v", quoteBytes(path), err)
		return dst, true
	}
	return append(dst, d.reading(device, m, v)), true
}

func fmtTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

func fmtDuration(ns int64) string { return time.Duration(ns).String() }

// unitOf is the unit of a new metric: configured, else the format's own.
func (s *subscription) unitOf(name string) string {
	if u, ok := s.units[name]; ok {
		return u
	}
	if s.format == FormatTasmota {
		leaf := name
		if i := strings.LastIndex(name, s.sep); i >= 0 {
			leaf = name[i+len(s.sep):]
		}
		return tasmotaUnits[leaf]
	}
	return ""
}
