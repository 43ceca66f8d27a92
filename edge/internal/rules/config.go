package rules

import (
	"fmt"
	"math"
	"time"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

// Rule kinds.
const (
	KindThreshold = "threshold" // the reading's value
	KindRate      = "rate"      // change per second between consecutive readings of a series
	KindAbsence   = "absence"   // no reading from the device (and metric, if set) for `for`
	KindWindow    = "window"    // a statistic of a closed window aggregate
)

// Rule is one declarative alert rule of the agent configuration.
//
// Threshold, rate and window rules fire when the observed value is above
// `above`, below `below`, or outside the band [below, above] when both are
// set; they resolve only once the value is back inside by `hysteresis`
// (value <= above - hysteresis, value >= below + hysteresis), so a value
// hovering at the limit does not flap. Absence rules fire when the device
// has sent nothing for `for` and resolve with its next reading.
type Rule struct {
	Name       string        `yaml:"name" help:"rule name, unique; a token (no spaces, dots, '*' or '>')"`
	Kind       string        `yaml:"kind" help:"threshold | rate | absence | window"`
	Device     string        `yaml:"device" help:"device the rule watches; \"\" or \"*\" = every device"`
	Metric     string        `yaml:"metric" help:"metric the rule watches (absence: \"\" = any metric)"`
	Above      *float64      `yaml:"above" help:"fire when the value is above this"`
	Below      *float64      `yaml:"below" help:"fire when the value is below this"`
	Hysteresis float64       `yaml:"hysteresis" help:"resolve only when the value is back inside by this much"`
	For        time.Duration `yaml:"for" help:"absence: fire when the device is silent this long"`
	Window     time.Duration `yaml:"window" help:"window: the aggregate window size (one of aggregate.windows)"`
	Stat       string        `yaml:"stat" help:"window: the statistic (count, min, max, sum, mean, last, stddev, p50, p90, p99)"`
	Severity   string        `yaml:"severity" help:"free text copied into the alert, e.g. warning or critical"`
}

func (r *Rule) anyDevice() bool { return r.Device == "" || r.Device == "*" }

// Validate checks one rule; i is its position, for the error's key.
func (r *Rule) Validate(i int) error {
	key := func(f string) string { return fmt.Sprintf("rules[%d].%s", i, f) }
	if err := schemas.ValidateToken("rule name", r.Name); err != nil {
		return config.Invalid(key("name"), r.Name, "a non-empty token without spaces, dots, '*' or '>'")
	}
	if !r.anyDevice() {
		if err := schemas.ValidateToken("device", r.Device); err != nil {
			return config.Invalid(key("device"), r.Device, "a device id, \"\" or \"*\"")
		}
	}
	if r.Metric != "" || r.Kind != KindAbsence {
		if err := schemas.ValidateToken("metric", r.Metric); err != nil {
			return config.Invalid(key("metric"), r.Metric, "a metric name")
		}
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"above", r.Above}, {"below", r.Below}} {
		if f.v != nil && (math.IsNaN(*f.v) || math.IsInf(*f.v, 0)) {
			return config.Invalid(key(f.name), *f.v, "a finite number")
		}
	}
	if r.Hysteresis < 0 || math.IsNaN(r.Hysteresis) || math.IsInf(r.Hysteresis, 0) {
		return config.Invalid(key("hysteresis"), r.Hysteresis, "a finite number >= 0")
	}
	switch r.Kind {
	case KindThreshold, KindRate, KindWindow:
		if r.Above == nil && r.Below == nil {
			return config.Invalid(key("above"), "", "above, below or both (a band) for a "+r.Kind+" rule")
		}
		if r.Above != nil && r.Below != nil && *r.Below >= *r.Above {
			return config.Invalid(key("below"), *r.Below, fmt.Sprintf("less than above (%v): the band is [below, above]", *r.Above))
		}
		if r.Above != nil && r.Below != nil && 2*r.Hysteresis >= *r.Above-*r.Below {
			return config.Invalid(key("hysteresis"), r.Hysteresis, "less than half the band's width")
		}
		if r.For != 0 {
			return config.Invalid(key("for"), r.For, "only on absence rules")
		}
	case KindAbsence:
		if r.For <= 0 {
			return config.Invalid(key("for"), r.For, "a positive duration, e.g. 30s")
		}
		if r.Above != nil || r.Below != nil {
			return config.Invalid(key("above"), "", "no above/below on an absence rule")
		}
	default:
		return config.Invalid(key("kind"), r.Kind, "threshold, rate, absence or window")
	}
	if r.Kind == KindWindow {
		if r.Window <= 0 {
			return config.Invalid(key("window"), r.Window, "one of aggregate.windows, e.g. 1m")
		}
		if !schemas.IsStat(r.Stat) {
			return config.Invalid(key("stat"), r.Stat, "count, min, max, sum, mean, last, stddev, p50, p90 or p99")
		}
	} else if r.Window != 0 || r.Stat != "" {
		return config.Invalid(key("window"), r.Window, "window and stat only on window rules")
	}
	return nil
}

// Validate checks every rule and that names are unique. windows are the
// aggregate window sizes in force (window rules must use one of them).
func Validate(rs []Rule, windows []time.Duration) error {
	seen := map[string]int{}
	for i := range rs {
		if err := rs[i].Validate(i); err != nil {
			return err
		}
		if j, dup := seen[rs[i].Name]; dup {
			return config.Invalid(fmt.Sprintf("rules[%d].name", i), rs[i].Name, fmt.Sprintf("a name not used already (rules[%d])", j))
		}
		seen[rs[i].Name] = i
		if rs[i].Kind == KindWindow {
			ok := false
			for _, w := range windows {
				ok = ok || w == rs[i].Window
			}
			if !ok {
				return config.Invalid(fmt.Sprintf("rules[%d].window", i), rs[i].Window, fmt.Sprintf("one of the aggregate windows %v (aggregate.windows, with aggregate.enabled)", windows))
			}
		}
	}
	return nil
}
