package forward

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket that lends: a take larger than the tokens on hand
// is granted at once and the debt delays the next take, so a batch bigger
// than the burst still goes through and the long-run rate stays exact.
type bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens (bytes) per second
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64) *bucket {
	// A quarter second of burst smooths the uplink without letting a lane
	// flood it after an idle spell.
	burst := max(rate/4, 16<<10)
	return &bucket{rate: rate, burst: burst, tokens: burst}
}

// reserve takes n tokens and says how long to wait before using them.
func (b *bucket) reserve(now time.Time, n float64) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	b.tokens -= n
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// uplink enforces forward.max_bytes_per_second across the live and backlog
// lanes. Both lanes draw from the shared bucket, so together they never exceed
// the cap; the backlog also draws from its own bucket of backlog_share of the
// cap while the live lane has data to send, so live data keeps at least the
// rest. When the live lane is idle the backlog may use the whole cap.
type uplink struct {
	shared, backlog *bucket
	liveBusy        func() bool
}

func newUplink(bytesPerSecond int64, share float64, liveBusy func() bool) *uplink {
	if bytesPerSecond <= 0 {
		return nil
	}
	return &uplink{shared: newBucket(float64(bytesPerSecond)),
		backlog: newBucket(float64(bytesPerSecond) * share), liveBusy: liveBusy}
}

// wait blocks until n bytes may be sent by the given lane, or ctx ends.
func (u *uplink) wait(ctx context.Context, backlog bool, n int) error {
	if u == nil {
		return nil
	}
	now := time.Now()
	d := u.shared.reserve(now, float64(n))
	if backlog && u.liveBusy() {
		d = max(d, u.backlog.reserve(now, float64(n)))
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
