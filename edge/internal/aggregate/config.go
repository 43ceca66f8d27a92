package aggregate

import (
	"fmt"
	"slices"
	"time"

	"github.com/updraft-io/updraft/schemas/config"
)

// Config chooses the windows the agent computes.
type Config struct {
	Enabled         bool            `yaml:"enabled" help:"compute window aggregates at the edge"`
	Windows         []time.Duration `yaml:"windows" help:"tumbling event-time window sizes, aligned to the Unix epoch (UTC), e.g. [10s, 1m]"`
	AllowedLateness time.Duration   `yaml:"allowed_lateness" help:"how long after its end a window still accepts readings; later readings are counted as late and only forwarded raw"`
	SeriesIdle      time.Duration   `yaml:"series_idle" help:"a series (device, metric) silent this long, with no open window, is forgotten"`
	MaxSeries       int             `yaml:"max_series" help:"most series tracked at once; readings of further series are only forwarded raw (bounds memory)"`
	MaxSketchBins   int             `yaml:"max_sketch_bins" help:"most quantile sketch bins per sign and window (bounds memory; 1024 bins keep the 1% bound over 8 decades)"`
}

// DefaultConfig: 10 s and 1 min windows, 5 s of lateness.
func DefaultConfig() Config {
	return Config{
		Enabled:         true,
		Windows:         []time.Duration{10 * time.Second, time.Minute},
		AllowedLateness: 5 * time.Second,
		SeriesIdle:      10 * time.Minute,
		MaxSeries:       100_000,
		MaxSketchBins:   1024,
	}
}

// Validate names the key at fault.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	if len(c.Windows) == 0 {
		return config.Invalid("aggregate.windows", c.Windows, "at least one window size, e.g. [10s, 1m]")
	}
	seen := map[time.Duration]bool{}
	for _, w := range c.Windows {
		if w < time.Second || w%time.Second != 0 || w > 24*time.Hour || (24*time.Hour)%w != 0 {
			return config.Invalid("aggregate.windows", w, "whole seconds between 1s and 24h that divide a day (10s, 1m, 5m, 1h)")
		}
		if seen[w] {
			return config.Invalid("aggregate.windows", w, "each size once")
		}
		seen[w] = true
	}
	if c.AllowedLateness < 0 || c.AllowedLateness > time.Hour {
		return config.Invalid("aggregate.allowed_lateness", c.AllowedLateness, "between 0s and 1h")
	}
	if c.SeriesIdle < slices.Max(c.Windows)+c.AllowedLateness {
		return config.Invalid("aggregate.series_idle", c.SeriesIdle,
			fmt.Sprintf("at least the largest window plus the allowed lateness (%v)", slices.Max(c.Windows)+c.AllowedLateness))
	}
	if c.MaxSeries < 1 {
		return config.Invalid("aggregate.max_series", c.MaxSeries, "a positive number")
	}
	if c.MaxSketchBins < 64 || c.MaxSketchBins > 1<<16 {
		return config.Invalid("aggregate.max_sketch_bins", c.MaxSketchBins, "between 64 and 65536")
	}
	return nil
}
