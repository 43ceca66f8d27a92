package decode

import (
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// maxDepth bounds how deeply nested values the scanner skips over; deeper
// payloads are rejected as malformed rather than followed.
const maxDepth = 256

// scanner reads one JSON document in place. Each method returns false on a
// syntax error and leaves i at the offending byte.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str reads a string starting at its opening quote and returns its raw
// content; escaped reports whether unescape is needed.
func (s *scanner) str() (raw []byte, escaped, ok bool) {
	s.i++ // opening quote
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, escaped, true
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return nil, false, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return nil, false, false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if unhex(h) < 0 {
						return nil, false, false
					}
				}
				s.i += 6
			default:
				return nil, false, false
			}
			escaped = true
		case c < 0x20:
			return nil, false, false
		case c < utf8.RuneSelf:
			s.i++
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				return nil, false, false
			}
			s.i += n
		}
	}
	return nil, false, false
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// unescape appends the decoded form of raw, which str has validated, to
// dst. Lone surrogates become U+FFFD, as encoding/json does.
func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := rune(hex4(raw[i+2:]))
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if r2 := utf16.DecodeRune(r, rune(hex4(raw[i+2:]))); r2 != utf8.RuneError {
						dst = utf8.AppendRune(dst, r2)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, raw[i+1])
		}
		i += 2
	}
	return dst
}

func hex4(b []byte) int {
	return unhex(b[0])<<12 | unhex(b[1])<<8 | unhex(b[2])<<4 | unhex(b[3])
}

// number reads a JSON number and returns its text; isInt reports that it
// has neither fraction nor exponent.
func (s *scanner) number() (text []byte, isInt, ok bool) {
	start := s.i
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case '1' <= c && c <= '9':
		s.i++
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
	default:
		return nil, false, false
	}
	isInt = true
	if s.peek() == '.' {
		isInt = false
		s.i++
		if !isDigit(s.peek()) {
			return nil, false, false
		}
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		isInt = false
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !isDigit(s.peek()) {
			return nil, false, false
		}
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
	}
	return s.b[start:s.i], isInt, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isNumber reports whether b is exactly one JSON number.
func isNumber(b []byte) (isInt, ok bool) {
	s := scanner{b: b}
	_, isInt, ok = s.number()
	return isInt, ok && s.i == len(b)
}

func (s *scanner) literal(word string) bool {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return false
	}
	s.i += len(word)
	return true
}

// skip reads over any value, checking its syntax.
func (s *scanner) skip(depth int) bool {
	switch c := s.peek(); {
	case c == '"':
		_, _, ok := s.str()
		return ok
	case c == '-' || isDigit(c):
		_, _, ok := s.number()
		return ok
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return false
		}
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		s.i++
		s.ws()
		if s.peek() == end {
			s.i++
			return true
		}
		for {
			if c == '{' {
				if s.peek() != '"' {
					return false
				}
				if _, _, ok := s.str(); !ok {
					return false
				}
				s.ws()
				if s.peek() != ':' {
					return false
				}
				s.i++
				s.ws()
			}
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.i++
				s.ws()
			case end:
				s.i++
				return true
			default:
				return false
			}
		}
	}
	return false
}

// valueKind classifies what a field held.
type valueKind uint8

const (
	valueNumber     valueKind = iota
	valueNonNumeric           // string that is no number, array, object, null
	valueNonFinite            // NaN, ±Inf, or beyond float64
)

// value reads a field's value: a number, a boolean (0 or 1) or a string
// holding a number. scratch is reused for unescaping.
func (s *scanner) value(scratch *[]byte) (v float64, kind valueKind, ok bool) {
	switch c := s.peek(); {
	case c == '-' || isDigit(c):
		text, isInt, ok := s.number()
		if !ok {
			return 0, 0, false
		}
		v, kind = parseNumber(text, isInt)
		return v, kind, true
	case c == '"':
		raw, esc, ok := s.str()
		if !ok {
			return 0, 0, false
		}
		if esc {
			*scratch = unescape((*scratch)[:0], raw)
			raw = *scratch
		}
		v, kind = parseNumericString(raw)
		return v, kind, true
	case c == 't':
		return 1, valueNumber, s.literal("true")
	case c == 'f':
		return 0, valueNumber, s.literal("false")
	}
	return 0, valueNonNumeric, s.skip(0)
}

// parseNumber converts a valid JSON number, exactly as strconv.ParseFloat
// (and so encoding/json) would.
func parseNumber(text []byte, isInt bool) (float64, valueKind) {
	// Integers of up to 15 digits are exact in a float64, so they skip the
	// general parser; that is what most sensors send.
	if isInt && len(text) <= 15 {
		neg := text[0] == '-'
		digits := text
		if neg {
			digits = text[1:]
		}
		var n int64
		for _, c := range digits {
			n = n*10 + int64(c-'0')
		}
		f := float64(n)
		if neg {
			f = -f
		}
		return f, valueNumber
	}
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(text), len(text)), 64)
	if err != nil || math.IsInf(f, 0) {
		// The text is a valid number, so the only error is ErrRange.
		return 0, valueNonFinite
	}
	return f, valueNumber
}

// parseNumericString reads a string value: a JSON number inside quotes, or
// a spelling of NaN or infinity, which is named as such so the dead letter
// says what is wrong.
func parseNumericString(b []byte) (float64, valueKind) {
	if isInt, ok := isNumber(b); ok {
		return parseNumber(b, isInt)
	}
	if len(b) <= 9 {
		var lower [9]byte
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower[i] = c
		}
		switch string(lower[:len(b)]) {
		case "nan", "-nan", "+nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity":
			return 0, valueNonFinite
		}
	}
	return 0, valueNonNumeric
}
