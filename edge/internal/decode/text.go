package decode

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/updraft-io/updraft/schemas"
)

// homieDescription is the Homie v5 attribute that describes a device's
// nodes and properties, units included.
const homieDescription = "$description"

// maxHomieDevices bounds the devices whose units are remembered.
const maxHomieDevices = 16384

// decodeNumeric reads a payload that is one value in plain text, the
// metric named by the topic.
func (d *Decoder) decodeNumeric(dst []schemas.Reading, sub *subscription, device string, metric metricName, payload []byte) ([]schemas.Reading, *Reject) {
	v, r := textValue(payload)
	if r != nil {
		return dst, r
	}
	rd := d.reading(device, metric, v)
	rd.TS = d.now().UnixNano()
	return append(dst, rd), nil
}

// textValue parses a plain-text value: a decimal number, or true/false.
func textValue(payload []byte) (float64, *Reject) {
	b := trimSpace(payload)
	if len(b) == 0 {
		return 0, reject(ReasonNoReadings, "the payload is empty")
	}
	if !utf8.Valid(b) {
		return 0, reject(ReasonNonNumeric, "payload is not UTF-8 text")
	}
	if isInt, ok := isNumber(b); ok {
		v, kind := parseNumber(b, isInt)
		return v, valueReject(kind, nil)
	}
	switch strings.ToLower(unsafe.String(unsafe.SliceData(b), len(b))) {
	case "true":
		return 1, nil
	case "false":
		return 0, nil
	}
	// Forms JSON does not allow but devices send: +1, 1., .5
	if isDecimal(b) {
		v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(b), len(b)), 64)
		if err == nil && !math.IsInf(v, 0) {
			return v, nil
		}
		return 0, valueReject(valueNonFinite, nil)
	}
	_, kind := parseNumericString(b)
	if kind == valueNumber {
		kind = valueNonNumeric
	}
	return 0, valueReject(kind, nil)
}

// isDecimal reports an optionally signed decimal number with an optional
// fraction and exponent, and at least one digit.
func isDecimal(b []byte) bool {
	i := 0
	if b[0] == '+' || b[0] == '-' {
		i++
	}
	digits := 0
	for ; i < len(b) && isDigit(b[i]); i++ {
		digits++
	}
	if i < len(b) && b[i] == '.' {
		for i++; i < len(b) && isDigit(b[i]); i++ {
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == len(b) || !isDigit(b[i]) {
			return false
		}
		for ; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	return i == len(b)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}

// decodeHomie reads a Homie v5 property value, or a device's $description
// for the units of its properties.
func (d *Decoder) decodeHomie(dst []schemas.Reading, sub *subscription, device string, metric metricName, payload []byte) ([]schemas.Reading, *Reject) {
	if metric.name == homieDescription {
		d.homieDescribe(sub, device, payload)
		return dst, nil
	}
	if len(payload) == 0 {
		// An empty retained message deletes a property's value.
		return dst, nil
	}
	v, r := textValue(payload)
	if r != nil {
		return dst, r
	}
	rd := d.reading(device, metric, v)
	if _, configured := sub.units[metric.name]; !configured {
		if u, ok := d.homieUnits[device][metric.name]; ok {
			rd.Unit = u
		}
	}
	rd.TS = d.now().UnixNano()
	return append(dst, rd), nil
}

// homieDescribe remembers the units a $description gives. A description
// that cannot be read is ignored: it is metadata, the values still flow.
func (d *Decoder) homieDescribe(sub *subscription, device string, payload []byte) {
	var desc struct {
		Nodes map[string]struct {
			Properties map[string]struct {
				Unit string `json:"unit"`
			} `json:"properties"`
		} `json:"nodes"`
	}
	if json.Unmarshal(payload, &desc) != nil {
		return
	}
	units := map[string]string{}
	for node, n := range desc.Nodes {
		for prop, p := range n.Properties {
			if p.Unit != "" && len(p.Unit) <= schemas.MaxTokenLen && utf8.ValidString(p.Unit) {
				units[node+sub.sep+prop] = p.Unit
			}
		}
	}
	if _, known := d.homieUnits[device]; known || len(d.homieUnits) < maxHomieDevices {
		d.homieUnits[device] = units
	}
}
