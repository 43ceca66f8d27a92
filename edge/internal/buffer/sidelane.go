package buffer

import "sort"

// sideLane is the live records of one side lane (dead letters, events).
//
// Records get ascending sequence numbers as they are committed and are nearly
// always acknowledged in that order, so the lane is kept as runs of
// consecutive sequences stored in one segment, plus the few sequences inside
// a run that are already gone (acknowledged out of order). Its memory grows
// with the number of runs and holes, not with the number of records: a
// backlog of millions of events during a long outage costs a few bytes.
type sideLane struct {
	runs  []sideRun           // ascending, disjoint
	holes map[uint64]struct{} // removed sequences strictly inside a run
	busy  map[uint64]struct{} // sequences being removed
	count int
	bytes int64
	ch    chan struct{} // closed when records are added
}

// sideRun is the sequences first..last, all stored in segment seg, minus the
// lane's holes.
type sideRun struct {
	seg, first, last uint64
}

// add appends a record; seq must be above every sequence in the lane.
func (l *sideLane) add(seg, seq uint64, bytes int64) {
	if n := len(l.runs); n > 0 && l.runs[n-1].seg == seg && l.runs[n-1].last+1 == seq {
		l.runs[n-1].last = seq
	} else {
		l.runs = append(l.runs, sideRun{seg: seg, first: seq, last: seq})
	}
	l.count++
	l.bytes += bytes
}

// sortRuns orders runs recovered segment by segment.
func (l *sideLane) sortRuns() {
	sort.Slice(l.runs, func(i, j int) bool { return l.runs[i].first < l.runs[j].first })
}

// live reports whether seq is a record of the lane, and its segment.
func (l *sideLane) live(seq uint64) (seg uint64, ok bool) {
	i := sort.Search(len(l.runs), func(i int) bool { return l.runs[i].last >= seq })
	if i == len(l.runs) || l.runs[i].first > seq {
		return 0, false
	}
	if _, gone := l.holes[seq]; gone {
		return 0, false
	}
	return l.runs[i].seg, true
}

// next returns the lowest live record above after that is not being removed.
func (l *sideLane) next(after uint64) (seq, seg uint64, ok bool) {
	i := sort.Search(len(l.runs), func(i int) bool { return l.runs[i].last > after })
	for ; i < len(l.runs); i++ {
		r := l.runs[i]
		for s := max(r.first, after+1); s <= r.last; s++ {
			if _, gone := l.holes[s]; gone {
				continue
			}
			if _, b := l.busy[s]; b {
				continue
			}
			return s, r.seg, true
		}
	}
	return 0, 0, false
}

// setBusy marks a live record as being removed; false if it is already.
func (l *sideLane) setBusy(seq uint64) bool {
	if _, b := l.busy[seq]; b {
		return false
	}
	if l.busy == nil {
		l.busy = map[uint64]struct{}{}
	}
	l.busy[seq] = struct{}{}
	return true
}

func (l *sideLane) clearBusy(seq uint64) { delete(l.busy, seq) }

// remove drops a live record of bytes bytes.
func (l *sideLane) remove(seq uint64, bytes int64) {
	delete(l.busy, seq)
	i := sort.Search(len(l.runs), func(i int) bool { return l.runs[i].last >= seq })
	if i == len(l.runs) || l.runs[i].first > seq {
		return
	}
	if _, gone := l.holes[seq]; gone {
		return
	}
	l.count--
	l.bytes -= bytes
	r := &l.runs[i]
	switch {
	case seq == r.first:
		r.first++
		for r.first <= r.last && l.takeHole(r.first) {
			r.first++
		}
	case seq == r.last:
		r.last--
		for r.last >= r.first && l.takeHole(r.last) {
			r.last--
		}
	default:
		if l.holes == nil {
			l.holes = map[uint64]struct{}{}
		}
		l.holes[seq] = struct{}{}
		return
	}
	if r.first > r.last {
		l.runs = append(l.runs[:i], l.runs[i+1:]...)
	}
}

func (l *sideLane) takeHole(seq uint64) bool {
	if _, ok := l.holes[seq]; ok {
		delete(l.holes, seq)
		return true
	}
	return false
}

// sideRec is a record committed by one transaction, added to its lane once
// the transaction is durable.
type sideRec struct {
	seq, seg uint64
	bytes    int64
}
