package buffer

import (
	"context"
	"errors"
	"time"
)

// End says which end of the queue Claim takes from.
type End int

const (
	// Oldest takes the lowest sequence: the backlog, in arrival order.
	Oldest End = iota
	// Newest takes the highest sequence: live data, ahead of any backlog.
	Newest
)

// Claim blocks until a sealed batch that is neither claimed nor being
// acknowledged exists, marks it claimed and returns it: the oldest or the
// newest, as end says. Two forwarding lanes, one per end, thereby share the
// queue without sending a batch twice. A claimed batch is never dropped by a
// limit policy (it may be in flight); it stays claimed until Ack or Unclaim.
// Like Next, an unreadable batch is dropped (reason "corrupt") and skipped.
//
// With maxAge > 0, Claim(Newest) only takes a batch sealed by this process
// at most maxAge ago, and waits for one otherwise: the live lane sends what
// just arrived and leaves older data to the backlog lane.
func (b *Buffer) Claim(ctx context.Context, end End, maxAge time.Duration) (Sealed, error) {
	for {
		b.mu.Lock()
		var m *batchMeta
		bs := b.s.batches
		if end == Newest {
			for i := len(bs) - 1; i >= 0; i-- {
				x := bs[i]
				if maxAge > 0 && (x.replay || b.now().UnixNano()-x.rec.sealedAt > int64(maxAge)) {
					break
				}
				if !x.busy && !x.claimed {
					m = x
					break
				}
			}
		} else {
			for _, x := range bs {
				if !x.busy && !x.claimed {
					m = x
					break
				}
			}
		}
		if m != nil {
			m.claimed = true
			b.mu.Unlock()
			rs, err := b.readBatch(m)
			if err == nil {
				return b.sealed(m, rs), nil
			}
			if errors.Is(err, ErrClosed) {
				return Sealed{}, err
			}
			if b.isLive(m) {
				b.log.Error("buffer: unreadable batch dropped", "seq", m.seq, "err", err)
				b.mu.Lock()
				m.claimed = false
				b.mu.Unlock()
				if err := b.remove(m.seq, ReasonCorrupt); err != nil {
					return Sealed{}, err
				}
			}
			continue
		}
		ch := b.s.sealedCh
		b.s.waiters++
		b.mu.Unlock()
		b.poke() // Run seals by age only while someone waits.
		select {
		case <-ch:
		case <-ctx.Done():
		case <-b.closedCh:
		}
		b.mu.Lock()
		b.s.waiters--
		b.mu.Unlock()
		if err := stopErr(ctx, b.closedCh); err != nil {
			return Sealed{}, err
		}
	}
}

// Unclaim returns a claimed, unacknowledged batch to the queue, for a lane
// that stops before JetStream acknowledged it. Unknown sequences are ignored.
func (b *Buffer) Unclaim(seq uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.s.batches {
		if m.seq == seq {
			m.claimed = false
			return
		}
	}
}
