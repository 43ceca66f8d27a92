// Package lake is the layout contract of the Updraft Parquet lake: where
// partitions live, how data, temporary and commit files are named, and the
// column names of raw reading files. It has no Parquet dependency so any tier
// can import it; docs/lake.md describes the same contract for other readers.
package lake

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// Top-level folders of a lake directory. Names starting with "_" are skipped
// by Hive-style readers (Spark, DuckDB partition discovery), so only RawDir
// looks like data to them.
const (
	RawDir      = "raw"
	CommitsDir  = "_commits"
	RejectedDir = "_rejected"
)

// Column names of raw reading files, in file order.
const (
	ColTS     = "ts"
	ColRegion = "region"
	ColSite   = "site"
	ColEdge   = "edge"
	ColDevice = "device"
	ColMetric = "metric"
	ColValue  = "value"
	ColUnit   = "unit"
)

// RawColumns lists the columns of raw reading files in file order.
var RawColumns = []string{ColTS, ColRegion, ColSite, ColEdge, ColDevice, ColMetric, ColValue, ColUnit}

// File name suffixes.
const (
	DataExt     = ".parquet"
	ManifestExt = ".json"
	// TempSuffix ends every file that is still being written. Together with a
	// leading dot it keeps such files out of "*.parquet" globs and out of
	// Hive-style discovery, which skips hidden files.
	TempSuffix = ".tmp"
)

// Partition is one Hive-style partition of raw readings: a region and one
// UTC hour.
type Partition struct {
	Region string
	// Hour is the start of the UTC hour.
	Hour time.Time
}

// PartitionOf is the partition that holds a reading of region at ts (ns since
// the Unix epoch).
func PartitionOf(region string, ts int64) Partition {
	return Partition{Region: region, Hour: time.Unix(0, ts).UTC().Truncate(time.Hour)}
}

// Dir is the partition's folder relative to the lake root, slash separated:
// raw/region=<r>/date=<YYYY-MM-DD>/hour=<HH>.
func (p Partition) Dir() string {
	return path.Join(RawDir, "region="+p.Region, "date="+p.Hour.Format(time.DateOnly), fmt.Sprintf("hour=%02d", p.Hour.Hour()))
}

func (p Partition) String() string { return p.Dir() }

// Contains reports whether ts (ns) falls in the partition's hour.
func (p Partition) Contains(ts int64) bool {
	start := p.Hour.UnixNano()
	return ts >= start && ts < start+int64(time.Hour)
}

// ParsePartition parses a folder as Dir renders it.
func ParsePartition(dir string) (Partition, error) {
	parts := strings.Split(path.Clean(dir), "/")
	if len(parts) != 4 || parts[0] != RawDir {
		return Partition{}, fmt.Errorf("partition %q: want %s/region=<r>/date=<YYYY-MM-DD>/hour=<HH>", dir, RawDir)
	}
	region, ok := strings.CutPrefix(parts[1], "region=")
	if !ok {
		return Partition{}, fmt.Errorf("partition %q: second folder must be region=<r>", dir)
	}
	if err := schemas.ValidateToken("region", region); err != nil {
		return Partition{}, fmt.Errorf("partition %q: %w", dir, err)
	}
	date, err := ParseDateDir(parts[2])
	if err != nil {
		return Partition{}, fmt.Errorf("partition %q: %w", dir, err)
	}
	hour, err := ParseHourDir(parts[3])
	if err != nil {
		return Partition{}, fmt.Errorf("partition %q: %w", dir, err)
	}
	return Partition{Region: region, Hour: date.Add(time.Duration(hour) * time.Hour)}, nil
}

// ParseDateDir parses a "date=YYYY-MM-DD" folder name to UTC midnight.
func ParseDateDir(name string) (time.Time, error) {
	v, ok := strings.CutPrefix(name, "date=")
	if !ok {
		return time.Time{}, fmt.Errorf("folder %q: want date=<YYYY-MM-DD>", name)
	}
	d, err := time.ParseInLocation(time.DateOnly, v, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("folder %q: want date=<YYYY-MM-DD>", name)
	}
	return d, nil
}

// ParseHourDir parses an "hour=HH" folder name.
func ParseHourDir(name string) (int, error) {
	v, ok := strings.CutPrefix(name, "hour=")
	if !ok || len(v) != 2 {
		return 0, fmt.Errorf("folder %q: want hour=<00-23>", name)
	}
	h, err := strconv.Atoi(v)
	if err != nil || h < 0 || h > 23 {
		return 0, fmt.Errorf("folder %q: want hour=<00-23>", name)
	}
	return h, nil
}

// Overlaps reports whether the partition's hour intersects [from, to).
func (p Partition) Overlaps(from, to time.Time) bool {
	return p.Hour.Before(to) && p.Hour.Add(time.Hour).After(from)
}

// DataFileName is the final name of the data file written by commit seq. The
// random part keeps names unique even if the commit log is ever lost and
// sequence numbers start again, so a rename can never replace committed data.
func DataFileName(seq uint64, random uint32) string {
	return fmt.Sprintf("part-%012d-%08x%s", seq, random, DataExt)
}

// TempName is the name a file has while it is written: hidden and not ending
// in its final extension.
func TempName(final string) string {
	dir, base := path.Split(final)
	return dir + "." + base + TempSuffix
}

// FinalName undoes TempName; ok is false if name is not a temporary name.
func FinalName(temp string) (final string, ok bool) {
	dir, base := path.Split(temp)
	if !strings.HasPrefix(base, ".") || !strings.HasSuffix(base, TempSuffix) || len(base) <= 1+len(TempSuffix) {
		return "", false
	}
	return dir + strings.TrimSuffix(base[1:], TempSuffix), true
}

// IsDataFile reports whether a base name is a committed data file, the only
// kind of file a reader of the lake should open.
func IsDataFile(base string) bool {
	return strings.HasSuffix(base, DataExt) && !strings.HasPrefix(base, ".")
}

// ManifestName is the base name of commit seq's manifest under CommitsDir.
// Zero padding makes lexical order commit order.
func ManifestName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, ManifestExt) }

// ParseManifestName returns the commit sequence of a manifest base name.
func ParseManifestName(base string) (uint64, bool) {
	v, ok := strings.CutSuffix(base, ManifestExt)
	if !ok || len(v) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}
