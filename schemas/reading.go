package schemas

import (
	"fmt"
	"math"
	"time"
)

// Reading is one measured value from one device: the unit of data that flows
// from the edge to the lake.
type Reading struct {
	Region string
	Site   string
	Edge   string
	Device string
	Metric string
	// TS is the event time in nanoseconds since the Unix epoch, UTC.
	TS    int64
	Value float64
	// Unit is optional ("" means unknown).
	Unit string
}

// Time returns the event time as a time.Time in UTC.
func (r Reading) Time() time.Time { return time.Unix(0, r.TS).UTC() }

// Validate reports whether the reading can enter the pipeline: every
// identifying token is valid, the value is finite and the time is set.
func (r Reading) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"region", r.Region}, {"site", r.Site}, {"edge", r.Edge}, {"device", r.Device}, {"metric", r.Metric},
	} {
		if err := ValidateToken(f.name, f.v); err != nil {
			return err
		}
	}
	if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
		return fmt.Errorf("%w: %v", ErrNonFinite, r.Value)
	}
	if r.TS <= 0 {
		return fmt.Errorf("%w: %d", ErrBadTimestamp, r.TS)
	}
	if len(r.Unit) > MaxTokenLen {
		return fmt.Errorf("%w: unit is %d bytes, at most %d allowed", ErrBadToken, len(r.Unit), MaxTokenLen)
	}
	return nil
}

// EdgeID identifies one edge agent globally: "<region>.<site>.<edge>".
type EdgeID struct {
	Region, Site, Edge string
}

// String renders the id as "<region>.<site>.<edge>", which is unambiguous
// because tokens never contain dots.
func (e EdgeID) String() string { return e.Region + "." + e.Site + "." + e.Edge }

// Validate checks every token of the id.
func (e EdgeID) Validate() error {
	if err := ValidateToken("region", e.Region); err != nil {
		return err
	}
	if err := ValidateToken("site", e.Site); err != nil {
		return err
	}
	return ValidateToken("edge", e.Edge)
}

// ParseEdgeID parses "<region>.<site>.<edge>".
func ParseEdgeID(s string) (EdgeID, error) {
	var parts [3]string
	n := 0
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if n == 3 {
				return EdgeID{}, fmt.Errorf("%w: edge id %q has more than 3 tokens", ErrBadToken, s)
			}
			parts[n] = s[start:i]
			n++
			start = i + 1
		}
	}
	if n != 3 {
		return EdgeID{}, fmt.Errorf("%w: edge id %q must be <region>.<site>.<edge>", ErrBadToken, s)
	}
	id := EdgeID{parts[0], parts[1], parts[2]}
	return id, id.Validate()
}
