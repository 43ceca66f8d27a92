package decode

import (
	"fmt"
	"math"
	"strconv"
	"unsafe"

	"github.com/updraft-io/updraft/schemas"
)

// senmlRelative: SenML times below 2**28 seconds are relative to now
// (RFC 8428 section 4.5.3).
const senmlRelative = int64(1<<28) * 1e9

// senmlRecord holds one record's fields as read; strings and numbers point
// into the payload (or into a copy when escaped).
type senmlRecord struct {
	bn, n, u, bu, vs    []byte
	hasBN, hasBU, hasVS bool
	bt, t, bv, v, s, bs []byte
	vb, hasVB, hasVD    bool
	other               bool // a non-base field: the record must carry a value
}

// senmlString reads a string field; escaped strings are copied.
func senmlString(s *scanner) ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	raw, esc, ok := s.str()
	if esc {
		raw = unescape(nil, raw)
	}
	return raw, ok
}

// decodeSenML reads a SenML JSON pack (RFC 8428): an array of records whose
// base fields carry over to the records after them.
func (d *Decoder) decodeSenML(dst []schemas.Reading, sub *subscription, device string, payload []byte) ([]schemas.Reading, *Reject) {
	start := len(dst)
	s := scanner{b: payload}
	var sem semErr
	malformed := func(what string) *Reject {
		return reject(ReasonMalformedJSON, fmt.Sprintf("%s at byte %d", what, s.i))
	}
	s.ws()
	if s.peek() != '[' {
		if !s.skip(0) {
			return dst, malformed("invalid JSON")
		}
		return dst, reject(ReasonNotAnObject, "a SenML pack is a JSON array of records")
	}
	s.i++
	s.ws()
	now := d.now().UnixNano()
	bn, bu := d.senBN[:0], d.senBU[:0]
	defer func() { d.senBN, d.senBU = bn, bu }()
	var bt int64
	var bv, bs float64
	if s.peek() == ']' {
		s.i++
	} else {
		for idx := 0; ; idx++ {
			if s.peek() != '{' {
				return dst[:start], malformed("expected a record object")
			}
			var rec senmlRecord
			if !d.senmlRecord(&s, &rec, idx, &sem) {
				return dst[:start], malformed("invalid SenML record")
			}
			if sem.reason == "" {
				if rec.hasBN {
					bn = append(bn[:0], rec.bn...)
				}
				if rec.hasBU {
					bu = append(bu[:0], rec.bu...)
				}
				var ok bool
				if rec.bt != nil {
					if bt, ok = senmlNanos(rec.bt); !ok {
						sem.set(ReasonBadTimestamp, "record %d: bt %s is not a time in seconds", idx, quoteBytes(rec.bt))
					}
				}
				if rec.bv != nil {
					bv, _ = parseNumber(rec.bv, false)
				}
				if rec.bs != nil {
					bs, _ = parseNumber(rec.bs, false)
				}
				dst = d.senmlResolve(dst, sub, device, &rec, idx, bn, bu, bt, bv, bs, now, &sem)
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
	}
	s.ws()
	if s.i != len(s.b) {
		return dst[:start], malformed("data after the SenML pack")
	}
	if sem.reason != "" {
		return dst[:start], reject(sem.reason, sem.detail)
	}
	if len(dst) == start {
		return dst, reject(ReasonNoReadings, "the pack holds no values")
	}
	return dst, nil
}

// senmlRecord reads one record object; false is a syntax error.
func (d *Decoder) senmlRecord(s *scanner, rec *senmlRecord, idx int, sem *semErr) bool {
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		if s.peek() != '"' {
			return false
		}
		key, esc, ok := s.str()
		if !ok {
			return false
		}
		if esc {
			key = unescape(nil, key)
		}
		s.ws()
		if s.peek() != ':' {
			return false
		}
		s.i++
		s.ws()
		num := func(dst *[]byte) bool {
			text, _, ok := s.number()
			if !ok {
				if !s.skip(0) {
					return false
				}
				sem.set(ReasonBadRecord, "record %d: field %s is not a number", idx, quoteBytes(key))
				return true
			}
			if *dst != nil {
				sem.set(ReasonBadRecord, "record %d: field %s appears twice", idx, quoteBytes(key))
			}
			*dst = text
			return true
		}
		str := func(dst *[]byte, has *bool) bool {
			if s.peek() != '"' {
				if !s.skip(0) {
					return false
				}
				sem.set(ReasonBadRecord, "record %d: field %s is not a string", idx, quoteBytes(key))
				return true
			}
			v, ok := senmlString(s)
			*dst, *has = v, true
			return ok
		}
		var dummy bool
		switch string(key) {
		case "bn":
			ok = str(&rec.bn, &rec.hasBN)
		case "bu":
			ok = str(&rec.bu, &rec.hasBU)
		case "n":
			ok = str(&rec.n, &dummy)
			rec.other = true
		case "u":
			ok = str(&rec.u, &dummy)
			rec.other = true
		case "vs":
			ok = str(&rec.vs, &rec.hasVS)
			rec.other = true
		case "vd":
			ok = s.skip(0)
			rec.hasVD, rec.other = true, true
		case "bt":
			ok = num(&rec.bt)
		case "bv":
			ok = num(&rec.bv)
		case "bs":
			ok = num(&rec.bs)
		case "bver":
			var ver []byte
			ok = num(&ver)
		case "t":
			ok = num(&rec.t)
			rec.other = true
		case "v":
			ok = num(&rec.v)
			rec.other = true
		case "s":
			ok = num(&rec.s)
			rec.other = true
		case "ut":
			var ut []byte
			ok = num(&ut)
		case "vb":
			switch s.peek() {
			case 't':
				rec.vb, ok = true, s.literal("true")
			case 'f':
				rec.vb, ok = false, s.literal("false")
			default:
				if ok = s.skip(0); ok {
					sem.set(ReasonBadRecord, "record %d: field \"vb\" is not a boolean", idx)
				}
			}
			rec.hasVB, rec.other = true, true
		default:
			// Fields ending in _ must be understood (RFC 8428 section 4.4);
			// others are extensions that may be ignored.
			ok = s.skip(0)
			if len(key) > 0 && key[len(key)-1] == '_' {
				sem.set(ReasonBadRecord, "record %d: field %s must be understood and is not supported", idx, quoteBytes(key))
			}
		}
		if !ok {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
			continue
		case '}':
			s.i++
			return true
		}
		return false
	}
}

// senmlResolve turns a record into readings per RFC 8428 section 4.6.
func (d *Decoder) senmlResolve(dst []schemas.Reading, sub *subscription, device string, rec *senmlRecord,
	idx int, bn, bu []byte, bt int64, bv, bs float64, now int64, sem *semErr) []schemas.Reading {
	values := 0
	if rec.v != nil {
		values++
	}
	if rec.hasVS {
		values++
	}
	if rec.hasVB {
		values++
	}
	if rec.hasVD {
		values++
	}
	if values > 1 {
		sem.set(ReasonBadRecord, "record %d has more than one value field", idx)
		return dst
	}
	if values == 0 && rec.s == nil {
		if rec.other {
			sem.set(ReasonBadRecord, "record %d has neither a value nor a sum", idx)
		}
		return dst
	}
	// Name: the base name plus the name; with the device taken from the
	// base name, the metric is the name alone.
	if sub.deviceFromBase {
		base := bn
		for len(base) > 0 && (base[len(base)-1] == ':' || base[len(base)-1] == '/') {
			base = base[:len(base)-1]
		}
		if len(base) == 0 {
			sem.set(ReasonBadRecord, "record %d: no base name to name the device", idx)
			return dst
		}
		if name, ok := d.devices[string(base)]; ok {
			device = name
		} else {
			name, err := d.internDevice(string(base))
			if err != nil {
				sem.set(ReasonBadToken, "record %d: base name: %v", idx, err)
				return dst
			}
			device = name
		}
		d.pathBuf = append(d.pathBuf[:0], rec.n...)
	} else {
		d.pathBuf = append(append(d.pathBuf[:0], bn...), rec.n...)
	}
	if len(d.pathBuf) == 0 {
		sem.set(ReasonBadRecord, "record %d has no name", idx)
		return dst
	}
	ts := bt
	if rec.t != nil {
		t, ok := senmlNanos(rec.t)
		if !ok || (t > 0 && ts > math.MaxInt64-t) || (t < 0 && ts < math.MinInt64-t) {
			sem.set(ReasonBadTimestamp, "record %d: t %s is not a time in seconds", idx, quoteBytes(rec.t))
			return dst
		}
		ts += t
	}
	if ts < senmlRelative {
		ts += now
	}
	if ts <= 0 {
		sem.set(ReasonBadTimestamp, "record %d: time is before 1970", idx)
		return dst
	}
	if ts-now > d.skew {
		sem.set(ReasonFutureTimestamp, "record %d: time %s is %s ahead of this edge's clock (decode.max_clock_skew is %s)",
			idx, fmtTime(ts), fmtDuration(ts-now), fmtDuration(d.skew))
		return dst
	}
	unit := rec.u
	if unit == nil {
		unit = bu
	}
	if values == 1 {
		var v float64
		kind := valueNumber
		switch {
		case rec.v != nil:
			v, kind = parseNumber(rec.v, false)
			v += bv
		case rec.hasVB:
			if rec.vb {
				v = 1
			}
		case rec.hasVS:
			v, kind = parseNumericString(rec.vs)
		case rec.hasVD:
			kind = valueNonNumeric
		}
		if kind == valueNumber && (math.IsInf(v, 0) || math.IsNaN(v)) {
			kind = valueNonFinite
		}
		if r := valueReject(kind, d.pathBuf); r != nil {
			sem.keep(r)
			return dst
		}
		var ok bool
		if dst, ok = d.senmlAppend(dst, sub, device, d.pathBuf, unit, v, ts, idx, sem); !ok {
			return dst
		}
	}
	if rec.s != nil {
		v, kind := parseNumber(rec.s, false)
		v += bs
		if kind == valueNumber && math.IsInf(v, 0) {
			kind = valueNonFinite
		}
		d.pathBuf = append(d.pathBuf, "_sum"...)
		if r := valueReject(kind, d.pathBuf); r != nil {
			sem.keep(r)
			return dst
		}
		dst, _ = d.senmlAppend(dst, sub, device, d.pathBuf, unit, v, ts, idx, sem)
	}
	return dst
}

func (d *Decoder) senmlAppend(dst []schemas.Reading, sub *subscription, device string, name, unit []byte, v float64, ts int64, idx int, sem *semErr) ([]schemas.Reading, bool) {
	m, err := sub.internMetricBytes(name)
	if err != nil {
		sem.set(ReasonBadToken, "record %d: %v", idx, err)
		return dst, false
	}
	r := d.reading(device, m, v)
	r.TS = ts
	if unit != nil && string(unit) != m.unit {
		u, err := d.internUnit(unit)
		if err != nil {
			sem.set(ReasonBadRecord, "record %d: %v", idx, err)
			return dst, false
		}
		r.Unit = u
	}
	return append(dst, r), true
}

// internUnit returns a unit a payload names, shared between readings.
func (d *Decoder) internUnit(u []byte) (string, error) {
	if s, ok := d.units[string(u)]; ok {
		return s, nil
	}
	if len(u) > schemas.MaxTokenLen {
		return "", fmt.Errorf("unit %s is longer than %d bytes", quoteBytes(u), schemas.MaxTokenLen)
	}
	s := string(u)
	if len(d.units) < maxInternedMetrics {
		d.units[s] = s
	}
	return s, nil
}

// senmlNanos converts a SenML time in seconds (any JSON number, negative
// for relative times) to nanoseconds; decimal fractions are exact.
func senmlNanos(text []byte) (int64, bool) {
	neg := text[0] == '-'
	body := text
	if neg {
		body = text[1:]
	}
	var ns int64
	if isInt, ok := isNumber(body); ok && (isInt || !hasExponent(body)) {
		if len(body) == 1 && body[0] == '0' {
			return 0, true
		}
		if n, good := numericTS(body, isInt, 1e9); good {
			ns = n
		} else if n == 0 && allZero(body) {
			return 0, true
		} else {
			return 0, false
		}
	} else {
		f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(body), len(body)), 64)
		if err != nil || f*1e9 >= math.MaxInt64 {
			return 0, false
		}
		ns = int64(f * 1e9)
	}
	if neg {
		ns = -ns
	}
	return ns, true
}

func hasExponent(b []byte) bool {
	for _, c := range b {
		if c == 'e' || c == 'E' {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != '0' && c != '.' {
			return false
		}
	}
	return true
}
