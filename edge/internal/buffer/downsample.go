package buffer

import (
	"cmp"
	"slices"

	"github.com/updraft-io/updraft/schemas"
)

// Summary metric suffixes written by the downsample policy.
const (
	SuffixCount = ":count"
	SuffixMin   = ":min"
	SuffixMax   = ":max"
	SuffixMean  = ":mean"
	SuffixLast  = ":last"
)

type bucketKey struct {
	minute               int64
	device, metric, unit string
}

type bucket struct {
	n             int
	min, max, sum float64
	lastTS        int64
	last          float64
}

// summarise computes the downsample summaries of one batch: for every UTC
// minute, device, metric and unit with n readings, five readings:
//
//	<metric>:count  n                        at the minute's start, no unit
//	<metric>:min    smallest value           at the minute's start, the unit
//	<metric>:max    largest value            at the minute's start, the unit
//	<metric>:mean   sum/n (in batch order)   at the minute's start, the unit
//	<metric>:last   value of the latest      at that reading's time, the unit
//	                reading (the later in the batch on a tie)
//
// ordered by minute, device, metric, unit. Readings whose metric is too long
// for the suffix (the result would exceed schemas.MaxTokenLen) cannot be
// summarised; lost counts them.
func summarise(rs []schemas.Reading) (out []schemas.Reading, lost int) {
	buckets := map[bucketKey]*bucket{}
	for i := range rs {
		r := &rs[i]
		if len(r.Metric)+len(SuffixCount) > schemas.MaxTokenLen {
			lost++
			continue
		}
		k := bucketKey{minute: r.TS - r.TS%60e9, device: r.Device, metric: r.Metric, unit: r.Unit}
		bk := buckets[k]
		if bk == nil {
			bk = &bucket{min: r.Value, max: r.Value, lastTS: r.TS, last: r.Value}
			buckets[k] = bk
		}
		bk.n++
		bk.min, bk.max, bk.sum = min(bk.min, r.Value), max(bk.max, r.Value), bk.sum+r.Value
		if r.TS >= bk.lastTS {
			bk.lastTS, bk.last = r.TS, r.Value
		}
	}
	keys := make([]bucketKey, 0, len(buckets))
	for k := range buckets {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b bucketKey) int {
		return cmp.Or(cmp.Compare(a.minute, b.minute), cmp.Compare(a.device, b.device),
			cmp.Compare(a.metric, b.metric), cmp.Compare(a.unit, b.unit))
	})
	if len(rs) == 0 {
		return nil, lost
	}
	proto := schemas.Reading{Region: rs[0].Region, Site: rs[0].Site, Edge: rs[0].Edge}
	out = make([]schemas.Reading, 0, 5*len(keys))
	for _, k := range keys {
		bk := buckets[k]
		r := proto
		r.Device, r.TS, r.Unit = k.device, k.minute, k.unit
		add := func(suffix string, v float64, ts int64, unit string) {
			r.Metric, r.Value, r.TS, r.Unit = k.metric+suffix, v, ts, unit
			out = append(out, r)
		}
		add(SuffixCount, float64(bk.n), k.minute, "")
		add(SuffixMin, bk.min, k.minute, k.unit)
		add(SuffixMax, bk.max, k.minute, k.unit)
		add(SuffixMean, bk.sum/float64(bk.n), k.minute, k.unit)
		add(SuffixLast, bk.last, bk.lastTS, k.unit)
	}
	return out, lost
}
