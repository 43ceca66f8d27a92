package ingest

import (
	"slices"
	"sync"
	"time"
)

// latencyWindow keeps the last n end-to-end latencies (commit time minus
// reading time) so percentiles describe recent behaviour, not the whole
// life of the process.
type latencyWindow struct {
	mu   sync.Mutex
	buf  []time.Duration
	next int
	full bool
}

func newLatencyWindow(n int) *latencyWindow { return &latencyWindow{buf: make([]time.Duration, n)} }

// addSince adds at minus each of the times (ns) under one lock.
func (w *latencyWindow) addSince(at int64, ts []int64) {
	w.mu.Lock()
	for _, t := range ts {
		w.buf[w.next] = time.Duration(at - t)
		w.next++
		if w.next == len(w.buf) {
			w.next, w.full = 0, true
		}
	}
	w.mu.Unlock()
}

// Latency is a summary of recent end-to-end latencies in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50"`
	P90     float64 `json:"p90"`
	P99     float64 `json:"p99"`
	Max     float64 `json:"max"`
}

func (w *latencyWindow) summary() Latency {
	w.mu.Lock()
	n := w.next
	if w.full {
		n = len(w.buf)
	}
	s := slices.Clone(w.buf[:n])
	w.mu.Unlock()
	if n == 0 {
		return Latency{}
	}
	slices.Sort(s)
	// Nearest rank: the smallest sample with at least q of all at or below it.
	at := func(q float64) float64 {
		i := int(q*float64(n)+0.999999) - 1
		return ms(s[min(max(i, 0), n-1)])
	}
	return Latency{Samples: n, P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(s[n-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
