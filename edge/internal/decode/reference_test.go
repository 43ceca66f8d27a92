package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/updraft-io/updraft/schemas"
)

// refDecode is an independent, slow implementation of the documented JSON
// rules on top of encoding/json. Fuzzing compares it with the scanner.
// It returns the readings' metric, value and time, or ok=false.
type refReading struct {
	metric string
	value  float64
	ts     int64
}

var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

func refDecode(payload []byte, tsField string, mult int64, metric string, now time.Time, skew time.Duration) (out []refReading, ok bool) {
	if !json.Valid(payload) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var top any
	if err := dec.Decode(&top); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false
	}
	var ts int64
	haveTS := false
	switch v := top.(type) {
	case map[string]any:
		// Unmarshalling into a map hides duplicate keys, so walk the tokens
		// again to find them.
		keys, good := refKeys(payload)
		if !good {
			return nil, false
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if k == tsField || metric == "" || k == "value" {
				if seen[k] {
					return nil, false
				}
				seen[k] = true
			}
		}
		if t, has := v[tsField]; has {
			if ts, ok = refTimestamp(t, mult); !ok {
				return nil, false
			}
			haveTS = true
		}
		for _, k := range keys {
			if k == tsField {
				continue
			}
			if metric != "" {
				if k != "value" {
					continue
				}
				f, good := refValue(v[k])
				if !good {
					return nil, false
				}
				out = append(out, refReading{metric: metric, value: f})
				continue
			}
			if schemas.ValidateToken("metric", k) != nil || !utf8.ValidString(k) {
				return nil, false
			}
			f, good := refValue(v[k])
			if !good {
				return nil, false
			}
			out = append(out, refReading{metric: k, value: f})
		}
	default:
		if metric == "" {
			return nil, false
		}
		f, good := refValue(v)
		if !good {
			return nil, false
		}
		out = append(out, refReading{metric: metric, value: f})
	}
	if len(out) == 0 {
		return nil, false
	}
	if !haveTS {
		ts = now.UnixNano()
	} else if time.Duration(ts-now.UnixNano()) > skew {
		return nil, false
	}
	for i := range out {
		out[i].ts = ts
	}
	return out, true
}

// refKeys lists the top-level keys of an object in order, duplicates kept.
func refKeys(payload []byte) ([]string, bool) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if _, err := dec.Token(); err != nil {
		return nil, false
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, false
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, false
		}
	}
	return keys, true
}

func refValue(v any) (float64, bool) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case json.Number:
		return refFloat(string(x))
	case string:
		if !jsonNumber.MatchString(x) {
			return 0, false
		}
		return refFloat(x)
	}
	return 0, false
}

func refFloat(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

func refTimestamp(v any, mult int64) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		if mult == 0 {
			return 0, false
		}
		s := string(x)
		if strings.ContainsAny(s, "eE") {
			f, err := strconv.ParseFloat(s, 64)
			ns := f * float64(mult)
			if err != nil || !(ns >= 1) || ns >= math.MaxInt64 {
				return 0, false
			}
			return int64(ns), true
		}
		r, good := new(big.Rat).SetString(s)
		if !good {
			return 0, false
		}
		r.Mul(r, new(big.Rat).SetInt64(mult))
		n := new(big.Int).Quo(r.Num(), r.Denom()) // truncates; r is positive here
		if r.Sign() <= 0 || !n.IsInt64() || n.Int64() <= 0 {
			return 0, false
		}
		return n.Int64(), true
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil || t.Before(minTime) || t.After(maxTime) {
			return 0, false
		}
		return t.UnixNano(), true
	}
	return 0, false
}
