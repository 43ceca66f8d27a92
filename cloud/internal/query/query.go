// Package query answers point queries over the Parquet lake. It reads only
// what it must: partitions are chosen from the time range, row groups are
// skipped by their min/max statistics, and within a row group only the rows
// the filters select are decoded, so a narrow query opens a few files and
// decodes a few rows however large the lake grows.
package query

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// Request selects points. Empty string filters match everything.
type Request struct {
	Region, Site, Device, Metric string
	// From is inclusive, To exclusive.
	From, To time.Time
	// Limit caps the points returned, earliest first; 0 = no cap.
	Limit int
	// Step, when set, folds the points of each series into one per step
	// (counted from From) with Aggregate, one of Aggregates ("" = avg).
	Step      time.Duration
	Aggregate string
}

// Point is one reading in a result.
type Point struct {
	TS     time.Time
	Value  float64
	Unit   string
	Region string
	Site   string
	Edge   string
	Device string
	Metric string
}

// MarshalJSON renders ts as RFC 3339 with nanoseconds and a missing unit as null.
func (p Point) MarshalJSON() ([]byte, error) {
	var unit *string
	if p.Unit != "" {
		unit = &p.Unit
	}
	return json.Marshal(struct {
		TS     string  `json:"ts"`
		Value  float64 `json:"value"`
		Unit   *string `json:"unit"`
		Device string  `json:"device"`
		Metric string  `json:"metric"`
		Region string  `json:"region"`
		Site   string  `json:"site"`
		Edge   string  `json:"edge"`
	}{p.TS.UTC().Format(time.RFC3339Nano), p.Value, unit, p.Device, p.Metric, p.Region, p.Site, p.Edge})
}

// Result is a query's answer and what it cost.
type Result struct {
	Points        []Point `json:"points"`
	FilesRead     int     `json:"files_read"`
	RowGroupsRead int     `json:"row_groups_read"`
	RowsScanned   int64   `json:"rows_scanned"`
	// BytesRead is what the query read from files: the compressed column
	// chunks it decoded, the footers it had not kept from an earlier query,
	// and page offset indexes where it used them.
	BytesRead int64 `json:"bytes_read"`
	// Truncated is set when more points matched than Limit.
	Truncated bool `json:"truncated"`
}

// Engine queries one lake directory. It only reads, so it can run beside
// the writer: files appear under their final names atomically. It keeps
// the footers of the files it has read, so use one Engine for many queries.
type Engine struct {
	dir     string
	footers *footerCache
}

// New returns an Engine over the lake at dir.
func New(dir string) *Engine { return &Engine{dir: dir, footers: newFooterCache(maxCachedFooters)} }

// Query returns the points matching req, earliest first; with req.Step,
// one aggregated point per series and step.
func (e *Engine) Query(ctx context.Context, req Request) (*Result, error) {
	if req.Step <= 0 {
		return e.points(ctx, req)
	}
	all := req
	all.Limit = 0
	res, err := e.points(ctx, all)
	if err != nil {
		return nil, err
	}
	res.Points = aggregate(res.Points, req)
	if req.Limit > 0 && len(res.Points) > req.Limit {
		res.Points, res.Truncated = res.Points[:req.Limit], true
	}
	return res, nil
}

func (e *Engine) points(ctx context.Context, req Request) (*Result, error) {
	parts, err := e.partitions(req)
	if err != nil {
		return nil, err
	}
	// Partitions of one hour (several regions) go together: only after a
	// whole hour is it certain no earlier point can still come.
	var hours [][]lakefmt.Partition
	for i := 0; i < len(parts); {
		j := i
		for j < len(parts) && parts[j].Hour.Equal(parts[i].Hour) {
			j++
		}
		hours = append(hours, parts[i:j])
		i = j
	}
	// Hours are scanned a few at a time in parallel (decoding Parquet is
	// CPU bound); the limit is checked after each round, in time order.
	// The first round is one hour, so a query that the earliest hour
	// satisfies reads nothing more.
	workers := max(1, runtime.GOMAXPROCS(0))
	res := &Result{}
	var (
		chunks [][]Point
		found  int
	)
	for i, n := 0, 1; i < len(hours); i, n = i+n, workers {
		round := hours[i:min(i+n, len(hours))]
		out := make([]*Result, len(round))
		g, gctx := errgroup.WithContext(ctx)
		for k, hp := range round {
			g.Go(func() error {
				r := &Result{}
				for _, p := range hp {
					if err := e.scanPartition(gctx, p, req, r); err != nil {
						return err
					}
				}
				out[k] = r
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		for _, r := range out {
			chunks = append(chunks, r.Points)
			found += len(r.Points)
			res.FilesRead += r.FilesRead
			res.RowGroupsRead += r.RowGroupsRead
			res.RowsScanned += r.RowsScanned
			res.BytesRead += r.BytesRead
		}
		// Strictly more than Limit, so Truncated below is exact.
		if req.Limit > 0 && found > req.Limit {
			break
		}
	}
	// Copied once, at the end: a round at a time would copy everything
	// found so far each round.
	res.Points = make([]Point, 0, found)
	for _, c := range chunks {
		res.Points = append(res.Points, c...)
	}
	// One series comes out in time order already.
	byTime := func(a, b Point) int { return a.TS.Compare(b.TS) }
	if !slices.IsSortedFunc(res.Points, byTime) {
		slices.SortStableFunc(res.Points, byTime)
	}
	if req.Limit > 0 && len(res.Points) > req.Limit {
		res.Points, res.Truncated = res.Points[:req.Limit], true
	}
	return res, nil
}

// partitions lists the existing partitions whose hour overlaps the range,
// in time order; folders are listed, not generated, so a range of years
// costs only what exists.
func (e *Engine) partitions(req Request) ([]lakefmt.Partition, error) {
	raw := filepath.Join(e.dir, lakefmt.RawDir)
	regions, err := readDirNames(raw)
	if err != nil {
		return nil, err
	}
	var out []lakefmt.Partition
	for _, rd := range regions {
		region, ok := strings.CutPrefix(rd, "region=")
		if !ok || (req.Region != "" && region != req.Region) {
			continue
		}
		dates, err := readDirNames(filepath.Join(raw, rd))
		if err != nil {
			return nil, err
		}
		for _, dd := range dates {
			day, err := lakefmt.ParseDateDir(dd)
			if err != nil || !day.Before(req.To) || !day.Add(24*time.Hour).After(req.From) {
				continue
			}
			hours, err := readDirNames(filepath.Join(raw, rd, dd))
			if err != nil {
				return nil, err
			}
			for _, hd := range hours {
				h, err := lakefmt.ParseHourDir(hd)
				if err != nil {
					continue
				}
				p := lakefmt.Partition{Region: region, Hour: day.Add(time.Duration(h) * time.Hour)}
				if p.Overlaps(req.From, req.To) {
					out = append(out, p)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b lakefmt.Partition) int {
		if c := a.Hour.Compare(b.Hour); c != 0 {
			return c
		}
		return strings.Compare(a.Region, b.Region)
	})
	return out, nil
}

func readDirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

func (e *Engine) scanPartition(ctx context.Context, p lakefmt.Partition, req Request, res *Result) error {
	dir := filepath.Join(e.dir, filepath.FromSlash(p.Dir()))
	names, err := readDirNames(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if !lakefmt.IsDataFile(n) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.scanFile(ctx, filepath.Join(dir, n), req, res); err != nil {
			return err
		}
	}
	return nil
}
