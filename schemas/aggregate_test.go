package schemas_test

import (
	"errors"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

func TestFormatWindow(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{10 * time.Second, "10s"},
		{time.Minute, "1m"},
		{5 * time.Minute, "5m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{90 * time.Second, "1m30s"},
		{500 * time.Millisecond, "500ms"},
		{24 * time.Hour, "24h"},
	}
	for _, tt := range tests {
		if got := schemas.FormatWindow(tt.d); got != tt.want {
			t.Errorf("FormatWindow(%v) = %q, want %q", tt.d, got, tt.want)
		}
		back, err := schemas.ParseWindow(tt.want)
		if err != nil || back != tt.d {
			t.Errorf("ParseWindow(%q) = %v, %v", tt.want, back, err)
		}
	}
}

func TestAggregateMetricRoundTrip(t *testing.T) {
	tests := []struct {
		metric, stat string
		window       time.Duration
		name         string
	}{
		{"temperature", schemas.StatMean, time.Minute, "temperature:mean:1m"},
		{"temperature", schemas.StatCount, 10 * time.Second, "temperature:count:10s"},
		{"a:b", schemas.StatP99, time.Hour, "a:b:p99:1h"},
	}
	for _, tt := range tests {
		name := schemas.AggregateMetric(tt.metric, tt.stat, tt.window)
		if name != tt.name {
			t.Errorf("AggregateMetric = %q, want %q", name, tt.name)
		}
		m, s, w, err := schemas.ParseAggregateMetric(name)
		if err != nil || m != tt.metric || s != tt.stat || w != tt.window {
			t.Errorf("ParseAggregateMetric(%q) = %q %q %v %v", name, m, s, w, err)
		}
	}
}

func TestParseAggregateMetricErrors(t *testing.T) {
	for _, name := range []string{"", "temperature", "temperature:mean", ":mean:1m", "t:median:1m", "t:mean:", "t:mean:0s", "t:mean:-1m", "t:mean:1.5s", "t:mean:abc"} {
		if _, _, _, err := schemas.ParseAggregateMetric(name); !errors.Is(err, schemas.ErrBadToken) {
			t.Errorf("ParseAggregateMetric(%q) = %v, want ErrBadToken", name, err)
		}
	}
}

func FuzzParseAggregateMetric(f *testing.F) {
	f.Add("temperature:mean:1m")
	f.Add("a:b:p99:1h30m")
	f.Add("x:count:500ms")
	f.Fuzz(func(t *testing.T, name string) {
		m, s, w, err := schemas.ParseAggregateMetric(name)
		if err != nil {
			return
		}
		if got := schemas.AggregateMetric(m, s, w); got != name {
			// Equivalent spellings (01m, 60s) are accepted; the canonical one must parse to the same.
			m2, s2, w2, err := schemas.ParseAggregateMetric(got)
			if err != nil || m2 != m || s2 != s || w2 != w {
				t.Fatalf("%q -> %q %q %v -> %q does not round-trip", name, m, s, w, got)
			}
		}
	})
}
