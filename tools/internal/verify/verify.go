// Package verify checks a Parquet lake against what was published: every
// reading exactly once. It reads the lake with parquet-go, a Parquet
// implementation independent of the one the cloud writer uses, so a bug in
// the writer cannot hide itself.
package verify

import (
	"cmp"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Row is one lake row as parquet-go reads it.
type Row struct {
	TS     int64   `parquet:"ts"`
	Region string  `parquet:"region"`
	Site   string  `parquet:"site"`
	Edge   string  `parquet:"edge"`
	Device string  `parquet:"device"`
	Metric string  `parquet:"metric"`
	Value  float64 `parquet:"value"`
	Unit   *string `parquet:"unit,optional"`
}

// Key identifies a reading: one device reports one value per metric and time.
type Key struct {
	Edge, Device, Metric string
	TS                   int64
}

// Key returns the row's identity.
func (r Row) Key() Key { return Key{r.Edge, r.Device, r.Metric, r.TS} }

// ReadLake reads every committed Parquet file under dir/kind (e.g. "raw").
// Files still being written have a temporary name and are skipped, exactly as
// a DuckDB or Spark glob on *.parquet skips them.
func ReadLake(dir, kind string) (rows []Row, files int, err error) {
	root := filepath.Join(dir, kind)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && path == root {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".parquet") || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rs, err := parquet.ReadFile[Row](path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		files++
		rows = append(rows, rs...)
		return nil
	})
	return rows, files, err
}

// Report compares a lake with the published readings.
type Report struct {
	Published  int            `json:"published"`
	InLake     int            `json:"in_lake"`
	Files      int            `json:"files"`
	Unique     int            `json:"unique"`
	Duplicates int            `json:"duplicates"`
	Missing    int            `json:"missing"`
	Unexpected int            `json:"unexpected"`
	WrongValue int            `json:"wrong_value"`
	PerDevice  map[string]int `json:"-"`
	Examples   []string       `json:"examples,omitempty"`
}

// OK is true when every published reading is in the lake exactly once with
// its value, and nothing else is.
func (r Report) OK() bool {
	return r.Duplicates == 0 && r.Missing == 0 && r.Unexpected == 0 && r.WrongValue == 0 && r.Unique == r.Published
}

func (r Report) String() string {
	return fmt.Sprintf("published %d, in lake %d (%d files), unique %d, duplicates %d, missing %d, unexpected %d, wrong values %d",
		r.Published, r.InLake, r.Files, r.Unique, r.Duplicates, r.Missing, r.Unexpected, r.WrongValue)
}

// Exact compares the lake rows with exactly known published readings.
func Exact(rows []Row, published map[Key]float64) Report {
	rep := Report{Published: len(published), InLake: len(rows)}
	seen := make(map[Key]int, len(rows))
	for _, r := range rows {
		k := r.Key()
		seen[k]++
		if seen[k] > 1 {
			rep.Duplicates++
			rep.example("duplicate %+v", k)
			continue
		}
		want, ok := published[k]
		switch {
		case !ok:
			rep.Unexpected++
			rep.example("unexpected %+v", k)
		case want != r.Value:
			rep.WrongValue++
			rep.example("value of %+v: got %v, published %v", k, r.Value, want)
		}
	}
	rep.Unique = len(seen)
	for k := range published {
		if seen[k] == 0 {
			rep.Missing++
			rep.example("missing %+v", k)
		}
	}
	return rep
}

// Counts compares the lake with per-device reading counts (what the
// simulator's summary records), checking for duplicates by reading identity.
func Counts(rows []Row, perDevice map[string]int) Report {
	rep := Report{InLake: len(rows), PerDevice: map[string]int{}}
	seen := make(map[Key]struct{}, len(rows))
	for _, r := range rows {
		k := r.Key()
		if _, dup := seen[k]; dup {
			rep.Duplicates++
			rep.example("duplicate %+v", k)
			continue
		}
		seen[k] = struct{}{}
		rep.PerDevice[r.Device]++
	}
	rep.Unique = len(seen)
	for dev, n := range perDevice {
		rep.Published += n
		got := rep.PerDevice[dev]
		if got < n {
			rep.Missing += n - got
			rep.example("device %s: published %d, lake has %d", dev, n, got)
		} else if got > n {
			rep.Unexpected += got - n
			rep.example("device %s: published %d, lake has %d", dev, n, got)
		}
	}
	for dev, got := range rep.PerDevice {
		if _, ok := perDevice[dev]; !ok {
			rep.Unexpected += got
			rep.example("device %s was never published", dev)
		}
	}
	return rep
}

func (r *Report) example(format string, args ...any) {
	if len(r.Examples) < 10 {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// Percentiles returns the given percentiles (0-100) of xs, which it sorts.
func Percentiles[T cmp.Ordered](xs []T, ps ...float64) []T {
	out := make([]T, len(ps))
	if len(xs) == 0 {
		return out
	}
	slices.Sort(xs)
	for i, p := range ps {
		idx := int(p / 100 * float64(len(xs)-1))
		out[i] = xs[idx]
	}
	return out
}
