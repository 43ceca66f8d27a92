package batch

import (
	"cmp"
	"slices"
)

// SeriesOrder returns the order of the rows by series (device, then metric),
// then by less within a series, equal rows in input order. dev[i] and met[i]
// are row i's device and metric ranks (their places in string order), below
// nDev and nMet. perm and ends are reused when large enough.
//
// With few enough series for a table of counts (bySeries) it is a counting
// sort, after which a series usually needs only a check, since edges send
// each series in time order; ends[s] is then where series s (device rank *
// nMet + metric rank) ends in perm. Otherwise it compares.
func SeriesOrder(perm, ends, dev, met []int32, nDev, nMet int, less func(a, b int32) int) (_, _ []int32, bySeries bool) {
	n := len(dev)
	perm = grow(perm, n)
	series := nDev * nMet
	if series > 4*n+1024 {
		for i := range perm {
			perm[i] = int32(i)
		}
		slices.SortFunc(perm, func(a, b int32) int {
			return cmp.Or(cmp.Compare(dev[a], dev[b]), cmp.Compare(met[a], met[b]), less(a, b), cmp.Compare(a, b))
		})
		return perm, ends, false
	}
	ends = grow(ends, series+1)
	clear(ends)
	for i := range n {
		ends[int(dev[i])*nMet+int(met[i])+1]++
	}
	for s := 1; s <= series; s++ {
		ends[s] += ends[s-1]
	}
	for i := range n {
		s := int(dev[i])*nMet + int(met[i])
		perm[ends[s]] = int32(i)
		ends[s]++
	}
	// ends[s] is now the end of series s.
	start := int32(0)
	for _, end := range ends[:series] {
		run := perm[start:end]
		for j := 1; j < len(run); j++ {
			if less(run[j-1], run[j]) > 0 {
				slices.SortStableFunc(run, less)
				break
			}
		}
		start = end
	}
	return perm, ends, true
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// Interner numbers distinct strings from 0 in order of first appearance.
// The zero value is ready to use.
type Interner struct {
	ids   map[string]int32
	Words []string // by number
}

// ID returns s's number, giving it the next one if it is new.
func (n *Interner) ID(s string) int32 {
	i, ok := n.ids[s]
	if !ok {
		if n.ids == nil {
			n.ids = map[string]int32{}
		}
		i = int32(len(n.Words))
		n.ids[s] = i
		n.Words = append(n.Words, s)
	}
	return i
}

// Reset forgets every string, keeping the memory.
func (n *Interner) Reset() {
	clear(n.ids)
	n.Words = n.Words[:0]
}

// Ranks returns the numbers in the order of their strings, and each
// number's rank (its place in that order), in rank when large enough.
func (n *Interner) Ranks(rank []int32) (order, _ []int32) {
	order = make([]int32, len(n.Words))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return cmp.Compare(n.Words[a], n.Words[b]) })
	rank = grow(rank, len(order))
	for r, i := range order {
		rank[i] = int32(r)
	}
	return order, rank
}
