package schemas

import (
	"fmt"
	"strings"
)

// MaxTokenLen bounds every subject token and unit string.
const MaxTokenLen = 128

// Subject kinds of the telemetry namespace.
const (
	KindRaw = "raw"
	KindAgg = "agg"
)

// ValidateToken checks one subject token. name is what the token is (e.g.
// "device") so the error tells the user which value was wrong.
func ValidateToken(name, v string) error {
	if v == "" {
		return fmt.Errorf("%w: %s is empty", ErrBadToken, name)
	}
	if len(v) > MaxTokenLen {
		return fmt.Errorf("%w: %s %q is %d bytes, at most %d allowed", ErrBadToken, name, v, len(v), MaxTokenLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '.':
			return fmt.Errorf("%w: %s %q contains a dot; dots separate subject tokens", ErrBadToken, name, v)
		case c == '*' || c == '>':
			return fmt.Errorf("%w: %s %q contains the wildcard %q", ErrBadToken, name, v, c)
		case c == ' ' || c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w: %s %q contains whitespace or a control character", ErrBadToken, name, v)
		}
	}
	return nil
}

// TelemetrySubject is telemetry.<region>.<site>.<edge>.<kind>, kind raw or agg.
func TelemetrySubject(id EdgeID, kind string) string {
	return "telemetry." + id.String() + "." + kind
}

// RawSubject is where an edge publishes raw reading batches.
func RawSubject(id EdgeID) string { return TelemetrySubject(id, KindRaw) }

// AggSubject is where an edge publishes aggregate batches.
func AggSubject(id EdgeID) string { return TelemetrySubject(id, KindAgg) }

// EventSubject is events.<region>.<site>.<edge>.<kind>.
func EventSubject(id EdgeID, kind string) string { return "events." + id.String() + "." + kind }

// DeadLetterSubject is deadletter.<region>.<site>.<edge>.
func DeadLetterSubject(id EdgeID) string { return "deadletter." + id.String() }

// Region-wide subject filters, used for stream configuration.
func RegionTelemetryFilter(region string) string  { return "telemetry." + region + ".>" }
func RegionEventFilter(region string) string      { return "events." + region + ".>" }
func RegionDeadLetterFilter(region string) string { return "deadletter." + region + ".>" }

// Subject is a parsed Updraft subject.
type Subject struct {
	Class string // "telemetry", "events" or "deadletter"
	Edge  EdgeID
	Kind  string // raw/agg for telemetry, the event kind for events, "" for dead letters
}

// ParseSubject parses and validates any subject of the Updraft namespace.
func ParseSubject(s string) (Subject, error) {
	parts := strings.Split(s, ".")
	bad := func(why string) (Subject, error) {
		return Subject{}, fmt.Errorf("%w: %q: %s", ErrBadSubject, s, why)
	}
	if len(parts) < 4 {
		return bad("too few tokens")
	}
	sub := Subject{Class: parts[0], Edge: EdgeID{parts[1], parts[2], parts[3]}}
	switch sub.Class {
	case "telemetry":
		if len(parts) != 5 {
			return bad("want telemetry.<region>.<site>.<edge>.<raw|agg>")
		}
		sub.Kind = parts[4]
		if sub.Kind != KindRaw && sub.Kind != KindAgg {
			return bad("telemetry kind must be raw or agg")
		}
	case "events":
		if len(parts) != 5 {
			return bad("want events.<region>.<site>.<edge>.<kind>")
		}
		sub.Kind = parts[4]
		if err := ValidateToken("event kind", sub.Kind); err != nil {
			return Subject{}, err
		}
	case "deadletter":
		if len(parts) != 4 {
			return bad("want deadletter.<region>.<site>.<edge>")
		}
	default:
		return bad("class must be telemetry, events or deadletter")
	}
	if err := sub.Edge.Validate(); err != nil {
		return Subject{}, err
	}
	return sub, nil
}
