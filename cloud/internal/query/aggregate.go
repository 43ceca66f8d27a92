package query

import (
	"cmp"
	"context"
	"encoding/json"
	"math"
	"slices"
	"time"
)

// Aggregates a query can ask for with step.
var Aggregates = []string{"avg", "min", "max", "count", "last"}

// seriesKey identifies one series: one metric of one device behind one edge.
type seriesKey struct {
	Region, Site, Edge, Device, Metric string
}

func keyOf(p *Point) seriesKey { return seriesKey{p.Region, p.Site, p.Edge, p.Device, p.Metric} }

type bucket struct {
	key   seriesKey
	start int64
	unit  string
	n     int64
	sum   float64
	min   float64
	max   float64
	last  float64
	lastT int64
}

// aggregate folds points (any order) into one point per series and step,
// stamped with the step's start (counted from req.From).
func aggregate(points []Point, req Request) []Point {
	type bk struct {
		k     seriesKey
		start int64
	}
	from, step := req.From.UnixNano(), int64(req.Step)
	idx := map[bk]*bucket{}
	var order []*bucket
	for i := range points {
		p := &points[i]
		t := p.TS.UnixNano()
		start := from + (t-from)/step*step
		k := bk{keyOf(p), start}
		b := idx[k]
		if b == nil {
			b = &bucket{key: k.k, start: start, min: math.Inf(1), max: math.Inf(-1), lastT: math.MinInt64}
			idx[k] = b
			order = append(order, b)
		}
		b.n++
		b.sum += p.Value
		b.min, b.max = min(b.min, p.Value), max(b.max, p.Value)
		if t >= b.lastT {
			b.last, b.lastT = p.Value, t
		}
		if p.Unit != "" {
			b.unit = p.Unit
		}
	}
	slices.SortFunc(order, func(a, b *bucket) int {
		return cmp.Or(cmp.Compare(a.start, b.start), cmp.Compare(a.key.Device, b.key.Device),
			cmp.Compare(a.key.Metric, b.key.Metric), cmp.Compare(a.key.Edge, b.key.Edge),
			cmp.Compare(a.key.Site, b.key.Site), cmp.Compare(a.key.Region, b.key.Region))
	})
	out := make([]Point, len(order))
	for i, b := range order {
		var v float64
		switch req.Aggregate {
		case "min":
			v = b.min
		case "max":
			v = b.max
		case "count":
			v = float64(b.n)
		case "last":
			v = b.last
		default:
			v = b.sum / float64(b.n)
		}
		out[i] = Point{TS: time.Unix(0, b.start).UTC(), Value: v, Unit: b.unit, Region: b.key.Region, Site: b.key.Site,
			Edge: b.key.Edge, Device: b.key.Device, Metric: b.key.Metric}
		if req.Aggregate == "count" {
			out[i].Unit = ""
		}
	}
	return out
}

// Series is one series that has points in a time range.
type Series struct {
	Region string    `json:"region"`
	Site   string    `json:"site"`
	Edge   string    `json:"edge"`
	Device string    `json:"device"`
	Metric string    `json:"metric"`
	Unit   *string   `json:"unit"`
	Points int64     `json:"points"`
	First  time.Time `json:"first"`
	Last   time.Time `json:"last"`
}

// SeriesResult is the answer of /api/v1/series.
type SeriesResult struct {
	Series        []Series `json:"series"`
	FilesRead     int      `json:"files_read"`
	RowGroupsRead int      `json:"row_groups_read"`
	RowsScanned   int64    `json:"rows_scanned"`
	BytesRead     int64    `json:"bytes_read"`
}

// Series lists the series with points matching req (its filters and time
// range; Limit, Step and Aggregate are ignored), ordered by device, metric,
// edge.
func (e *Engine) Series(ctx context.Context, req Request) (*SeriesResult, error) {
	req.Limit, req.Step, req.Aggregate = 0, 0, ""
	res, err := e.Query(ctx, req)
	if err != nil {
		return nil, err
	}
	idx := map[seriesKey]*Series{}
	out := &SeriesResult{Series: []Series{}, FilesRead: res.FilesRead, RowGroupsRead: res.RowGroupsRead, RowsScanned: res.RowsScanned, BytesRead: res.BytesRead}
	for i := range res.Points {
		p := &res.Points[i]
		k := keyOf(p)
		s := idx[k]
		if s == nil {
			s = &Series{Region: k.Region, Site: k.Site, Edge: k.Edge, Device: k.Device, Metric: k.Metric, First: p.TS, Last: p.TS}
			idx[k] = s
		}
		s.Points++
		if p.TS.Before(s.First) {
			s.First = p.TS
		}
		if p.TS.After(s.Last) {
			s.Last = p.TS
		}
		if p.Unit != "" {
			u := p.Unit
			s.Unit = &u
		}
	}
	for _, s := range idx {
		out.Series = append(out.Series, *s)
	}
	slices.SortFunc(out.Series, func(a, b Series) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.Edge, b.Edge),
			cmp.Compare(a.Site, b.Site), cmp.Compare(a.Region, b.Region))
	})
	return out, nil
}

var _ json.Marshaler = Point{}
