package lake

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// Ledger is the set of committed batch IDs. Edges number their batches
// consecutively within an epoch, so the set is kept per (edge, epoch) as
// sorted, disjoint sequence ranges: a year of batches from one edge is a
// handful of ranges, not millions of keys.
type Ledger struct {
	epochs map[epochKey][]seqRange
}

type epochKey struct {
	edge  schemas.EdgeID
	epoch uint64
}

// seqRange is the closed range [lo, hi].
type seqRange struct{ lo, hi uint64 }

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{epochs: map[epochKey][]seqRange{}} }

// Contains reports whether id has been committed.
func (l *Ledger) Contains(id batch.ID) bool {
	rs := l.epochs[epochKey{id.Edge, id.Epoch}]
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi >= id.Seq })
	return i < len(rs) && rs[i].lo <= id.Seq
}

// Add records id as committed.
func (l *Ledger) Add(id batch.ID) {
	k := epochKey{id.Edge, id.Epoch}
	rs := l.epochs[k]
	s := id.Seq
	// i is the first range that ends at or after s-1, i.e. that s could touch.
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi+1 >= s || rs[i].hi == ^uint64(0) })
	switch {
	case i < len(rs) && rs[i].lo <= s && s <= rs[i].hi:
		return
	case i < len(rs) && rs[i].hi+1 == s:
		rs[i].hi = s
		if i+1 < len(rs) && rs[i+1].lo == s+1 {
			rs[i].hi = rs[i+1].hi
			rs = append(rs[:i+1], rs[i+2:]...)
		}
	case i < len(rs) && s+1 == rs[i].lo:
		rs[i].lo = s
	default:
		rs = append(rs, seqRange{})
		copy(rs[i+1:], rs[i:])
		rs[i] = seqRange{s, s}
	}
	l.epochs[k] = rs
}

// Ranges reports how many sequence ranges the ledger holds, a measure of its
// memory use.
func (l *Ledger) Ranges() int {
	n := 0
	for _, rs := range l.epochs {
		n += len(rs)
	}
	return n
}

// ParseMsgID parses batch.ID.MsgID(): "<region>.<site>.<edge>:<epoch hex>:<seq>".
// Edge tokens may contain ':', so the epoch and sequence are taken from the right.
func ParseMsgID(s string) (batch.ID, error) {
	j := strings.LastIndexByte(s, ':')
	if j < 0 {
		return batch.ID{}, fmt.Errorf("batch id %q: want <edge id>:<epoch hex>:<seq>", s)
	}
	i := strings.LastIndexByte(s[:j], ':')
	if i < 0 {
		return batch.ID{}, fmt.Errorf("batch id %q: want <edge id>:<epoch hex>:<seq>", s)
	}
	edge, err := schemas.ParseEdgeID(s[:i])
	if err != nil {
		return batch.ID{}, fmt.Errorf("batch id %q: %w", s, err)
	}
	epoch, err := strconv.ParseUint(s[i+1:j], 16, 64)
	if err != nil {
		return batch.ID{}, fmt.Errorf("batch id %q: epoch %q is not hex", s, s[i+1:j])
	}
	seq, err := strconv.ParseUint(s[j+1:], 10, 64)
	if err != nil {
		return batch.ID{}, fmt.Errorf("batch id %q: sequence %q is not a number", s, s[j+1:])
	}
	id := batch.ID{Edge: edge, Epoch: epoch, Seq: seq}
	if id.MsgID() != s {
		return batch.ID{}, fmt.Errorf("batch id %q: not in canonical form %q", s, id.MsgID())
	}
	return id, nil
}
