package lake

import (
	"time"

	"github.com/updraft-io/updraft/schemas/config"
)

// Config is the lake writer's part of the configuration, the YAML section "lake".
type Config struct {
	Dir          string        `yaml:"dir" help:"lake directory (Parquet files, commit manifests, rejected messages)"`
	RollRows     int           `yaml:"roll_rows" help:"flush when this many rows are buffered"`
	RollInterval time.Duration `yaml:"roll_interval" help:"flush when the oldest buffered batch is this old"`
	RowGroupRows int           `yaml:"row_group_rows" help:"rows per Parquet row group (the unit readers skip by statistics)"`
}

// Limits of the settings.
const (
	MinRollInterval = 100 * time.Millisecond
	MaxRollInterval = time.Hour
	MaxRollRows     = 50_000_000
	MinRowGroupRows = 1_000
	MaxRowGroupRows = 10_000_000
)

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Dir:          ".updraft/lake",
		RollRows:     1_000_000,
		RollInterval: 10 * time.Second,
		// About DuckDB's own row group size: large enough for fast scans,
		// small enough that statistics prune a narrow query.
		RowGroupRows: 128 * 1024,
	}
}

// Validate reports the first bad setting, naming its YAML key.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return config.Invalid("lake.dir", c.Dir, "a directory path")
	case c.RollRows < 1 || c.RollRows > MaxRollRows:
		return config.Invalid("lake.roll_rows", c.RollRows, "1 to 50000000")
	case c.RollInterval < MinRollInterval || c.RollInterval > MaxRollInterval:
		return config.Invalid("lake.roll_interval", c.RollInterval, "a duration from 100ms to 1h")
	case c.RowGroupRows < MinRowGroupRows || c.RowGroupRows > MaxRowGroupRows:
		return config.Invalid("lake.row_group_rows", c.RowGroupRows, "1000 to 10000000")
	}
	return nil
}
