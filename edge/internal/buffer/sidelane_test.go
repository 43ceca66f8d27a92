package buffer

import (
	"math/rand/v2"
	"testing"
)

// TestSideLaneMatchesReference drives a lane and a plain map with the same
// random adds, in-order and out-of-order removals and busy marks, and checks
// that both agree on every query.
func TestSideLaneMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	var l sideLane
	ref := map[uint64]uint64{} // seq -> seg
	refBytes := map[uint64]int64{}
	busy := map[uint64]bool{}
	var seq, seg uint64 = 0, 1
	var bytes int64
	check := func(step int) {
		t.Helper()
		if l.count != len(ref) || l.bytes != bytes {
			t.Fatalf("step %d: count %d bytes %d, want %d and %d", step, l.count, l.bytes, len(ref), bytes)
		}
		for _, after := range []uint64{0, rng.Uint64N(seq + 2), seq} {
			var want uint64
			found := false
			for s := after + 1; s <= seq; s++ {
				if _, ok := ref[s]; ok && !busy[s] {
					want, found = s, true
					break
				}
			}
			got, gseg, ok := l.next(after)
			if ok != found || (ok && (got != want || gseg != ref[want])) {
				t.Fatalf("step %d: next(%d) = %d/%d %v, want %d/%d %v", step, after, got, gseg, ok, want, ref[want], found)
			}
		}
		probe := rng.Uint64N(seq + 2)
		gseg, ok := l.live(probe)
		rseg, rok := ref[probe]
		if ok != rok || (ok && gseg != rseg) {
			t.Fatalf("step %d: live(%d) = %d %v, want %d %v", step, probe, gseg, ok, rseg, rok)
		}
	}
	for step := range 20000 {
		switch op := rng.IntN(10); {
		case op < 5: // add, sometimes in a new segment
			if rng.IntN(50) == 0 {
				seg++
			}
			seq++
			n := int64(rng.IntN(100) + 1)
			l.add(seg, seq, n)
			ref[seq], refBytes[seq], bytes = seg, n, bytes+n
		case op < 8: // remove the lowest (the usual order)
			if s, _, ok := l.next(0); ok {
				l.remove(s, refBytes[s])
				bytes -= refBytes[s]
				delete(ref, s)
			}
		case op < 9: // remove any live record
			s := rng.Uint64N(seq + 1)
			if _, ok := ref[s]; ok && !busy[s] {
				l.remove(s, refBytes[s])
				bytes -= refBytes[s]
				delete(ref, s)
			}
		default: // mark or clear busy
			s := rng.Uint64N(seq + 1)
			if _, ok := ref[s]; ok {
				if busy[s] {
					l.clearBusy(s)
					delete(busy, s)
				} else if l.setBusy(s) {
					busy[s] = true
				}
			}
		}
		check(step)
	}
	if len(l.runs) > 2*int(seg)+len(l.holes)+1 {
		t.Errorf("%d runs for %d segments and %d holes", len(l.runs), seg, len(l.holes))
	}
}
