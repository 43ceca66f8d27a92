package buffer

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

func atomicLoad(p *int64) int64   { return atomic.LoadInt64(p) }
func atomicAdd(p *int64, d int64) { atomic.AddInt64(p, d) }

func TestRoundTrip(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	start(t, b)
	if b.Epoch() == 0 {
		t.Fatal("epoch is 0")
	}
	all := readings(0, 1050)
	// Uneven appends, some concurrent, so chunks and batch boundaries differ.
	appendWait(t, b, all[:7])
	appendWait(t, b, all[7:333])
	var wg sync.WaitGroup
	for _, part := range [][2]int{{333, 600}, {600, 1000}} {
		wg.Add(1)
		go func() { defer wg.Done(); appendWait(t, b, all[part[0]:part[1]]) }()
	}
	wg.Wait()
	appendWait(t, b, all[1000:])

	var got []schemas.Reading
	var after uint64
	for len(got) < len(all) {
		s := next(t, b, after)
		if s.ID.Seq != after+1 {
			t.Fatalf("batch seq %d after %d", s.ID.Seq, after)
		}
		if s.ID.Edge != testEdge || s.ID.Epoch != b.Epoch() || s.Kind != schemas.KindRaw {
			t.Fatalf("batch id %+v kind %q", s.ID, s.Kind)
		}
		if len(s.Readings) == 0 || len(s.Readings) > cfg.BatchMaxReadings {
			t.Fatalf("batch %d has %d readings", s.ID.Seq, len(s.Readings))
		}
		if s.Replay {
			t.Fatalf("live batch %d marked replay", s.ID.Seq)
		}
		// The batch must be encodable on the wire and decode to the same readings.
		msg, err := batch.Encode(s.ID, s.Kind, s.Replay, s.Readings)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := batch.Decode(msg.Subject, msg.Header, msg.Data); err != nil {
			t.Fatal(err)
		}
		got = append(got, s.Readings...)
		after = s.ID.Seq
	}
	// A single appender, so the concurrent middle parts may swap; compare as sets per part.
	sameReadings(t, got[:333], all[:333])
	sameReadings(t, got[1000:], all[1000:])
	mid := map[int64]bool{}
	for _, r := range got[333:1000] {
		mid[r.TS] = true
	}
	for _, r := range all[333:1000] {
		if !mid[r.TS] {
			t.Fatalf("reading at %d missing", r.TS)
		}
	}
	st := b.Stats()
	if st.BufferedReadings != int64(len(all)) || st.UnackedBatches != int(after) {
		t.Fatalf("stats before acks: %+v", st)
	}
	for seq := uint64(1); seq <= after; seq++ {
		if err := b.Ack(seq); err != nil {
			t.Fatal(err)
		}
	}
	st = b.Stats()
	if st.BufferedReadings != 0 || st.UnackedBatches != 0 || st.BufferedBytes != 0 || st.NextSeq != after+1 {
		t.Fatalf("stats after acks: %+v", st)
	}
	noNext(t, b, after, 50*time.Millisecond)
}

func TestAppendRejects(t *testing.T) {
	b := open(t, testConfig(t))
	start(t, b)
	other := reading(1)
	other.Edge = "edge-2"
	bad := reading(2)
	bad.Device = "a.b"
	for name, c := range map[string]struct {
		kind string
		rs   []schemas.Reading
	}{
		"other edge": {schemas.KindRaw, []schemas.Reading{reading(0), other}},
		"bad token":  {schemas.KindRaw, []schemas.Reading{bad}},
		"bad kind":   {"cooked", []schemas.Reading{reading(0)}},
	} {
		errc := make(chan error, 1)
		b.Append(c.kind, c.rs, func(err error) { errc <- err })
		if err := <-errc; !errors.Is(err, ErrBadReading) {
			t.Errorf("%s: err %v, want ErrBadReading", name, err)
		}
	}
	if st := b.Stats(); st.BufferedReadings != 0 {
		t.Fatalf("rejected readings were stored: %+v", st)
	}
}

func TestReopenKeepsIdentityAndContent(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	stop := start(t, b)
	all := readings(0, 470)
	appendWait(t, b, all[:400]) // 4 sealed batches of 100
	var sealed []Sealed
	for after := uint64(0); after < 4; after++ {
		sealed = append(sealed, next(t, b, after))
	}
	if err := b.Ack(2); err != nil {
		t.Fatal(err)
	}
	appendWait(t, b, all[400:]) // 70 readings in the open batch, nobody waiting: not sealed
	epoch := b.Epoch()
	stop()

	b = open(t, cfg)
	start(t, b)
	if b.Epoch() != epoch {
		t.Fatalf("epoch changed from %x to %x", epoch, b.Epoch())
	}
	st := b.Stats()
	if st.UnackedBatches != 3 || st.OpenReadings != 70 || st.BufferedReadings != 370 || st.NextSeq != 5 {
		t.Fatalf("recovered stats %+v", st)
	}
	for _, want := range []Sealed{sealed[0], sealed[2], sealed[3]} {
		got := next(t, b, want.ID.Seq-1)
		if got.ID != want.ID || !got.SealedAt.Equal(want.SealedAt) || !got.Replay {
			t.Fatalf("batch %v sealed %v replay %v, want %v sealed %v replay", got.ID, got.SealedAt, got.Replay, want.ID, want.SealedAt)
		}
		sameReadings(t, got.Readings, want.Readings)
	}
	// The recovered open batch is sealed with the next sequence.
	s := next(t, b, 4)
	if s.ID.Seq != 5 {
		t.Fatalf("recovered open batch has seq %d, want 5", s.ID.Seq)
	}
	sameReadings(t, s.Readings, all[400:])
}

func TestOutOfOrderAcks(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	stop := start(t, b)
	appendWait(t, b, readings(0, 500))
	for after := uint64(0); after < 5; after++ {
		next(t, b, after)
	}
	for _, seq := range []uint64{3, 1, 5, 3} {
		if err := b.Ack(seq); err != nil {
			t.Fatalf("Ack(%d): %v", seq, err)
		}
	}
	for _, seq := range []uint64{0, 6, 1000} {
		if err := b.Ack(seq); !errors.Is(err, ErrUnknownSeq) {
			t.Fatalf("Ack(%d) = %v, want ErrUnknownSeq", seq, err)
		}
	}
	if s := next(t, b, 0); s.ID.Seq != 2 {
		t.Fatalf("Next(0) = %d, want 2", s.ID.Seq)
	}
	if s := next(t, b, 2); s.ID.Seq != 4 {
		t.Fatalf("Next(2) = %d, want 4", s.ID.Seq)
	}
	stop()
	b = open(t, cfg)
	start(t, b)
	if s := next(t, b, 0); s.ID.Seq != 2 {
		t.Fatalf("after reopen Next(0) = %d, want 2", s.ID.Seq)
	}
	if s := next(t, b, 2); s.ID.Seq != 4 {
		t.Fatalf("after reopen Next(2) = %d, want 4", s.ID.Seq)
	}
	noNext(t, b, 4, 100*time.Millisecond)
}

func TestDeadLetters(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	stop := start(t, b)
	big := make([]byte, 100<<10)
	for i := range big {
		big[i] = byte(i)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	dls := []DeadLetter{
		{Topic: "sensors/a/temp", Reason: "not a number", ReceivedAt: at, Payload: []byte("hot")},
		{Topic: "sensors/b/temp", Reason: "too large", ReceivedAt: at, Payload: big},
		{Topic: "sensors/c/temp", Reason: "empty", ReceivedAt: at},
	}
	for _, d := range dls {
		errc := make(chan error, 1)
		b.AppendDeadLetter(d, func(err error) { errc <- err })
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	dls[1].Payload, dls[1].Truncated = big[:MaxDeadLetterPayload], true
	ctx := context.Background()
	check := func(after uint64, want DeadLetter) uint64 {
		t.Helper()
		seq, got, err := b.NextDeadLetter(ctx, after)
		if err != nil {
			t.Fatal(err)
		}
		if got.Topic != want.Topic || got.Reason != want.Reason || !got.ReceivedAt.Equal(want.ReceivedAt) ||
			string(got.Payload) != string(want.Payload) || got.Truncated != want.Truncated {
			t.Fatalf("dead letter %d = %+v, want %+v", seq, got.Topic, want.Topic)
		}
		return seq
	}
	s1 := check(0, dls[0])
	s2 := check(s1, dls[1])
	s3 := check(s2, dls[2])
	if err := b.AckDeadLetter(s2); err != nil {
		t.Fatal(err)
	}
	stop()
	b = open(t, cfg)
	start(t, b)
	if st := b.Stats(); st.DeadLetters != 2 {
		t.Fatalf("%d dead letters after reopen, want 2", st.DeadLetters)
	}
	if got := check(0, dls[0]); got != s1 {
		t.Fatalf("seq %d, want %d", got, s1)
	}
	if got := check(s1, dls[2]); got != s3 {
		t.Fatalf("seq %d, want %d", got, s3)
	}
	// New dead letters never reuse a sequence.
	errc := make(chan error, 1)
	b.AppendDeadLetter(dls[0], func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := check(s3, dls[0]); got <= s3 {
		t.Fatalf("new dead letter seq %d, want > %d", got, s3)
	}
}

func TestNotABufferDirectory(t *testing.T) {
	cfg := testConfig(t)
	precious := cfg.Dir + "/notes.txt"
	if err := os.WriteFile(precious, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(cfg, testEdge, nil, nil); !errors.Is(err, ErrNotBuffer) {
		t.Fatalf("Open = %v, want ErrNotBuffer", err)
	}
	entries, _ := os.ReadDir(cfg.Dir)
	if len(entries) != 1 {
		t.Fatalf("directory changed: %v", entries)
	}
}

func TestCloseWithoutRunAndTwice(t *testing.T) {
	b := open(t, testConfig(t))
	errc := make(chan error, 1)
	b.Append(schemas.KindRaw, readings(0, 1), func(err error) { errc <- err })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending append got %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Next(context.Background(), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	if err := b.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close = %v", err)
	}
}
