package schemas

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Aggregate statistics. An aggregate travels as one reading per statistic,
// whose metric is "<metric>:<stat>:<window>" (AggregateMetric) and whose TS is
// the window start; count has no unit, every other statistic the raw metric's.
const (
	StatCount  = "count"
	StatMin    = "min"
	StatMax    = "max"
	StatSum    = "sum"
	StatMean   = "mean"
	StatLast   = "last"
	StatStddev = "stddev"
	StatP50    = "p50"
	StatP90    = "p90"
	StatP99    = "p99"
)

// Stats lists every aggregate statistic in the order they are emitted.
var Stats = []string{StatCount, StatMin, StatMax, StatSum, StatMean, StatLast, StatStddev, StatP50, StatP90, StatP99}

// IsStat reports whether s is one of Stats.
func IsStat(s string) bool {
	for _, v := range Stats {
		if v == s {
			return true
		}
	}
	return false
}

// FormatWindow renders a window size compactly: 10s, 1m, 5m, 1h, 1h30m,
// 500ms. The result parses back with time.ParseDuration. It panics on a
// size that is not a positive whole number of milliseconds.
func FormatWindow(d time.Duration) string {
	if d <= 0 || d%time.Millisecond != 0 {
		panic(fmt.Sprintf("schemas: window %v is not a positive whole number of milliseconds", d))
	}
	if d%time.Second != 0 {
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	var b strings.Builder
	if h := d / time.Hour; h > 0 {
		b.WriteString(strconv.FormatInt(int64(h), 10) + "h")
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		b.WriteString(strconv.FormatInt(int64(m), 10) + "m")
		d -= m * time.Minute
	}
	if s := d / time.Second; s > 0 {
		b.WriteString(strconv.FormatInt(int64(s), 10) + "s")
	}
	return b.String()
}

// ParseWindow parses a window size written by FormatWindow.
func ParseWindow(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d%time.Millisecond != 0 || strings.ContainsAny(s, "+-.") {
		return 0, fmt.Errorf("%w: window %q is not a positive duration such as 10s, 1m or 1h", ErrBadToken, s)
	}
	return d, nil
}

// AggregateMetric is the metric name of one aggregate statistic:
// "<metric>:<stat>:<window>", e.g. "temperature:mean:1m".
func AggregateMetric(metric, stat string, window time.Duration) string {
	return metric + ":" + stat + ":" + FormatWindow(window)
}

// ParseAggregateMetric splits a name made by AggregateMetric. The metric may
// itself contain colons: the statistic and window are the last two fields.
func ParseAggregateMetric(name string) (metric, stat string, window time.Duration, err error) {
	j := strings.LastIndexByte(name, ':')
	if j < 0 {
		return "", "", 0, fmt.Errorf("%w: aggregate metric %q must be <metric>:<stat>:<window>", ErrBadToken, name)
	}
	i := strings.LastIndexByte(name[:j], ':')
	if i <= 0 {
		return "", "", 0, fmt.Errorf("%w: aggregate metric %q must be <metric>:<stat>:<window>", ErrBadToken, name)
	}
	metric, stat = name[:i], name[i+1:j]
	if !IsStat(stat) {
		return "", "", 0, fmt.Errorf("%w: aggregate metric %q: unknown statistic %q (one of %s)", ErrBadToken, name, stat, strings.Join(Stats, ", "))
	}
	if window, err = ParseWindow(name[j+1:]); err != nil {
		return "", "", 0, fmt.Errorf("aggregate metric %q: %w", name, err)
	}
	return metric, stat, window, nil
}
