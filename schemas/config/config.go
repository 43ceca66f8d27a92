// Package config is how every Updraft binary reads its settings: a strict
// YAML file (unknown keys are errors), command-line flags that override it,
// validation errors that name the key, the value and what is allowed, and
// --help output generated from the settings struct so it documents every
// setting with its default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is a configuration problem a user can fix.
type Error struct {
	Key     string // dotted YAML key, e.g. "buffer.max_bytes"
	Value   any
	Allowed string // what would have been accepted
}

func (e *Error) Error() string {
	return fmt.Sprintf("config: %s: invalid value %q: allowed: %s", e.Key, fmt.Sprint(e.Value), e.Allowed)
}

// Invalid returns an *Error.
func Invalid(key string, value any, allowed string) error {
	return &Error{Key: key, Value: value, Allowed: allowed}
}

// LoadFile decodes the YAML file at path into dst, which already holds the
// defaults. Keys that dst does not define are rejected, so a typo never
// silently leaves a default in place.
func LoadFile(path string, dst any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: read %s: %w", path, err)
	}
	return Load(data, dst)
}

// Load is LoadFile for bytes.
func Load(data []byte, dst any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, errEOF(err)) {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

func errEOF(err error) error {
	if err != nil && err.Error() == "EOF" {
		return err
	}
	return errors.New("not eof")
}

// ByteSize is a size in bytes that YAML and flags accept as 1048576, "512KiB",
// "64MiB", "1GiB" or "1GB".
type ByteSize int64

var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// ParseByteSize parses the forms ByteSize accepts.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	// !(n >= 0) also refuses NaN, and the upper bound keeps the conversion
	// to int64 defined (ParseFloat accepts "NaN", "Inf" and "1e30").
	if err != nil || !(n >= 0) || n*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: want a number of bytes or a number with KiB, MiB, GiB, KB, MB or GB", s)
	}
	return ByteSize(n * float64(mult)), nil
}

func (b ByteSize) String() string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return strconv.FormatInt(int64(b)>>30, 10) + "GiB"
	case b >= 1<<20 && b%(1<<20) == 0:
		return strconv.FormatInt(int64(b)>>20, 10) + "MiB"
	case b >= 1<<10 && b%(1<<10) == 0:
		return strconv.FormatInt(int64(b)>>10, 10) + "KiB"
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// Set implements flag.Value.
func (b *ByteSize) Set(s string) error {
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML renders the human form.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }
