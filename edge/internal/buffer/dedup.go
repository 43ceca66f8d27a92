package buffer

// dedupWindow is how many recent MQTT message keys are remembered. MQTT
// packet identifiers are 16 bits and unique among a session's unacknowledged
// messages, so a broker never has more than 65,535 messages waiting for our
// PUBACK; the proof in docs/buffer.md rests on this bound.
const dedupWindow = 1 << 16

// dedupRing holds the keys of the last dedupWindow stored messages and which
// segments hold them (those segments are kept, so a restart can reload them).
type dedupRing struct {
	keys  []uint64
	next  int
	count map[uint64]uint32 // occurrences of each key in keys
	runs  []segRun          // oldest first
}

type segRun struct {
	seg uint64
	n   int
}

func (r *dedupRing) add(seg uint64, keys []uint64) {
	if r.count == nil {
		// Sized once for the whole window: growing by doubling would leave
		// the smaller copies as garbage at the moment memory is tightest.
		r.count = make(map[uint64]uint32, dedupWindow)
		r.keys = make([]uint64, 0, dedupWindow)
	}
	for _, k := range keys {
		if len(r.keys) < dedupWindow {
			r.keys = append(r.keys, k)
		} else {
			old := r.keys[r.next]
			if r.count[old]--; r.count[old] == 0 {
				delete(r.count, old)
			}
			r.keys[r.next] = k
			r.next = (r.next + 1) % dedupWindow
		}
		r.count[k]++
	}
	if len(keys) == 0 {
		return
	}
	if n := len(r.runs); n > 0 && r.runs[n-1].seg == seg {
		r.runs[n-1].n += len(keys)
	} else {
		r.runs = append(r.runs, segRun{seg, len(keys)})
	}
	total := 0
	for _, run := range r.runs {
		total += run.n
	}
	for total > dedupWindow {
		drop := min(total-dedupWindow, r.runs[0].n)
		r.runs[0].n -= drop
		total -= drop
		if r.runs[0].n == 0 {
			r.runs = r.runs[1:]
		}
	}
}

// contains is a map lookup: after a reconnect the broker may re-send tens of
// thousands of messages at once, all flagged DUP.
func (r *dedupRing) contains(k uint64) bool { return r.count[k] > 0 }

// pin is the lowest segment that must be kept for the ring (cur if none).
func (r *dedupRing) pin(cur uint64) uint64 {
	if len(r.runs) == 0 {
		return cur
	}
	return min(r.runs[0].seg, cur)
}
