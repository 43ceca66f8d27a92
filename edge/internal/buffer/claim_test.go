package buffer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

func claim(t *testing.T, b *Buffer, end End, maxAge time.Duration) Sealed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := b.Claim(ctx, end, maxAge)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return s
}

func noClaim(t *testing.T, b *Buffer, end End, maxAge time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if s, err := b.Claim(ctx, end, maxAge); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Claim = batch %d, %v; want nothing", s.ID.Seq, err)
	}
}

// TestClaimBothEnds: two claimants taking from the two ends never get the
// same batch, Unclaim gives a batch back, and Ack removes it. Each batch's
// readings are recycled once checked, and the next claim reads into them.
func TestClaimBothEnds(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	start(t, b)
	for i := range 5 {
		appendWait(t, b, readings(i*100, 100)) // one full batch each
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := b.Stats().UnackedBatches; n != 5 {
			return errors.New("not all sealed")
		}
		return nil
	})
	got := map[uint64]bool{}
	var recycled *schemas.Reading
	for i := range 5 {
		end := Oldest
		if i%2 == 1 {
			end = Newest
		}
		s := claim(t, b, end, 0)
		if got[s.ID.Seq] {
			t.Fatalf("batch %d claimed twice", s.ID.Seq)
		}
		got[s.ID.Seq] = true
		want := []uint64{1, 5, 2, 4, 3}[i]
		if s.ID.Seq != want {
			t.Fatalf("claim %d (%v) = batch %d, want %d", i, end, s.ID.Seq, want)
		}
		sameReadings(t, s.Readings, readings(int(want-1)*100, 100))
		if recycled != nil && &s.Readings[0] != recycled {
			t.Fatalf("claim %d read into a new slice, not the one recycled", i)
		}
		recycled = &s.Readings[0]
		b.Recycle(s.Readings)
	}
	noClaim(t, b, Oldest, 0)
	b.Unclaim(3)
	s := claim(t, b, Newest, 0)
	if s.ID.Seq != 3 {
		t.Fatalf("after Unclaim(3), claimed %d", s.ID.Seq)
	}
	sameReadings(t, s.Readings, readings(200, 100))
	for seq := range uint64(5) {
		if err := b.Ack(seq + 1); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.Stats(); st.UnackedBatches != 0 || st.BufferedReadings != 0 {
		t.Fatalf("after acks: %+v", st)
	}
}

// TestClaimNewestMaxAge: with maxAge, Newest takes only batches this
// process sealed recently; older ones are left to Oldest.
func TestClaimNewestMaxAge(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	clk := &fakeClock{ns: time.Now().UnixNano()}
	b.now = clk.now
	start(t, b)
	appendWait(t, b, readings(0, 100))
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if b.Stats().UnackedBatches != 1 {
			return errors.New("not sealed")
		}
		return nil
	})
	clk.advance(10 * time.Second)
	noClaim(t, b, Newest, 5*time.Second)
	appendWait(t, b, readings(100, 100))
	if s := claim(t, b, Newest, 5*time.Second); s.ID.Seq != 2 || s.Replay {
		t.Fatalf("Newest = batch %d (replay %v), want the fresh batch 2", s.ID.Seq, s.Replay)
	}
	if s := claim(t, b, Oldest, 0); s.ID.Seq != 1 {
		t.Fatalf("Oldest = batch %d, want 1", s.ID.Seq)
	}
}
