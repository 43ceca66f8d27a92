package buffer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func appendEventWait(t testing.TB, b *Buffer, e Event) {
	t.Helper()
	errc := make(chan error, 1)
	b.AppendEvent(e, func(err error) { errc <- err })
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("AppendEvent: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("AppendEvent: done not called")
	}
}

func nextEvent(t testing.TB, b *Buffer, after uint64) (uint64, Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seq, e, err := b.NextEvent(ctx, after)
	if err != nil {
		t.Fatalf("NextEvent(%d): %v", after, err)
	}
	return seq, e
}

func sameEvent(t testing.TB, seq uint64, got, want Event) {
	t.Helper()
	if got.Kind != want.Kind || !got.At.Equal(want.At) || string(got.Payload) != string(want.Payload) {
		t.Fatalf("event %d = %s %v %q, want %s %v %q", seq, got.Kind, got.At, got.Payload, want.Kind, want.At, want.Payload)
	}
}

func TestEvents(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	stop := start(t, b)
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	evs := []Event{
		{Kind: "alert", At: at, Payload: []byte(`{"rule":"hot","state":"firing"}`)},
		{Kind: "alert", At: at.Add(time.Second), Payload: []byte(`{"rule":"hot","state":"resolved"}`)},
		{Kind: "restart", At: at.Add(2 * time.Second)},
	}
	for _, e := range evs {
		appendEventWait(t, b, e)
	}
	// Readings and dead letters go in the same commits but other lanes.
	appendWait(t, b, readings(0, 10))
	b.AppendDeadLetter(DeadLetter{Topic: "t", Reason: "r"}, nil)
	if st := b.Stats(); st.Events != 3 {
		t.Fatalf("Stats().Events = %d, want 3", st.Events)
	}
	s1, got := nextEvent(t, b, 0)
	sameEvent(t, s1, got, evs[0])
	s2, got := nextEvent(t, b, s1)
	sameEvent(t, s2, got, evs[1])
	s3, got := nextEvent(t, b, s2)
	sameEvent(t, s3, got, evs[2])
	if err := b.AckEvent(s2); err != nil {
		t.Fatal(err)
	}
	if err := b.AckEvent(s2); err != nil {
		t.Fatalf("second AckEvent: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if seq, _, err := b.NextEvent(ctx, s3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NextEvent(%d) = %d, %v; want nothing", s3, seq, err)
	}

	stop()
	b = open(t, cfg)
	start(t, b)
	if st := b.Stats(); st.Events != 2 {
		t.Fatalf("%d events after reopen, want 2", st.Events)
	}
	if got, e := nextEvent(t, b, 0); got != s1 {
		t.Fatalf("seq %d, want %d", got, s1)
	} else {
		sameEvent(t, got, e, evs[0])
	}
	if got, e := nextEvent(t, b, s1); got != s3 {
		t.Fatalf("seq %d, want %d", got, s3)
	} else {
		sameEvent(t, got, e, evs[2])
	}
	// New events never reuse a sequence, and an event without a time gets one.
	appendEventWait(t, b, Event{Kind: "alert", Payload: []byte("{}")})
	if got, e := nextEvent(t, b, s3); got <= s3 || e.At.IsZero() {
		t.Fatalf("new event seq %d at %v, want > %d and a time", got, e.At, s3)
	}
	for _, seq := range []uint64{s1, s3} {
		if err := b.AckEvent(seq); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.Stats(); st.Events != 1 || st.DeadLetters != 1 {
		t.Fatalf("Stats() = %d events, %d dead letters; want 1 and 1", st.Events, st.DeadLetters)
	}
}

func TestAppendEventRejects(t *testing.T) {
	b := open(t, testConfig(t))
	start(t, b)
	for _, e := range []Event{
		{},
		{Kind: strings.Repeat("k", maxEventKind+1)},
		{Kind: "alert", Payload: make([]byte, MaxEventPayload+1)},
	} {
		errc := make(chan error, 1)
		b.AppendEvent(e, func(err error) { errc <- err })
		if err := <-errc; !errors.Is(err, ErrBadEvent) {
			t.Fatalf("AppendEvent(kind of %d bytes, payload of %d) = %v, want ErrBadEvent", len(e.Kind), len(e.Payload), err)
		}
	}
}

// TestEventsReclaimed: a segment that held only acknowledged events is
// dropped like one of acknowledged batches.
func TestEventsReclaimed(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBytes = 4 << 20 // the smallest segments, 256 KiB
	cfg.BatchMaxReadings = 10000
	b := open(t, cfg)
	start(t, b)
	appendEventWait(t, b, Event{Kind: "alert", Payload: make([]byte, 1000)})
	seq, _ := nextEvent(t, b, 0)
	b.mu.Lock()
	seg := b.s.sides[sideEvent].runs[0].seg
	b.mu.Unlock()
	// Fill segments with readings, acknowledging them, until the event's
	// segment is no longer the one being written or pinned by message keys.
	var after uint64
	for i := 0; ; i += 5000 {
		appendWait(t, b, readings(i, 5000))
		s := next(t, b, after)
		after = s.ID.Seq
		if err := b.Ack(s.ID.Seq); err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		passed := b.s.cur > seg && b.s.pinned > seg
		b.mu.Unlock()
		if passed {
			break
		}
	}
	segExists := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		_, ok := b.s.segs[seg]
		return ok
	}
	if !segExists() {
		t.Fatalf("segment %d reclaimed while it held an unacknowledged event", seg)
	}
	if err := b.AckEvent(seq); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if segExists() {
			return fmt.Errorf("segment %d not reclaimed", seg)
		}
		return nil
	})
}

// eventCrashChildEnv makes the crash child append events instead of readings:
// it reports "event <i>" once the event with payload ev-<i> is durable.
const eventCrashChildEnv = "UPDRAFT_BUFFER_CRASH_CHILD_EVENTS"

func eventCrashChild(b *Buffer) {
	for i := 0; ; i++ {
		errc := make(chan error, 1)
		b.AppendEvent(Event{Kind: "alert", At: time.Unix(int64(i), 0), Payload: fmt.Appendf(nil, "ev-%d", i)},
			func(err error) { errc <- err })
		if err := <-errc; err != nil {
			fmt.Println("error", err)
			select {}
		}
		fmt.Println("event", i)
	}
}

// TestEventsSurviveCrash kills a process appending events and checks that
// every event it saw durable comes back, in order, once.
func TestEventsSurviveCrash(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, eventCrashChildEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	durable := -1
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var i int
			if !scan(sc.Text(), "event %d", &i) {
				t.Errorf("child: %s", sc.Text())
				continue
			}
			mu.Lock()
			durable = i
			mu.Unlock()
		}
	}()
	checkFor(t, 60*time.Second, time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if durable < 300 {
			return fmt.Errorf("child has %d durable events", durable+1)
		}
		return nil
	})
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-lines
	_ = cmd.Wait()

	b, err := Open(crashConfig(dir), testEdge, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, b)
	var after uint64
	for i := 0; i <= durable; i++ {
		seq, e := nextEvent(t, b, after)
		if seq <= after {
			t.Fatalf("event %d has seq %d after %d", i, seq, after)
		}
		after = seq
		sameEvent(t, seq, e, Event{Kind: "alert", At: time.Unix(int64(i), 0), Payload: fmt.Appendf(nil, "ev-%d", i)})
	}
	// Events the child appended but had not yet heard about may follow; a
	// new event comes after all of them.
	n := b.Stats().Events
	appendEventWait(t, b, Event{Kind: "alert", Payload: []byte("new")})
	for range n - durable - 1 {
		after, _ = nextEvent(t, b, after)
	}
	if _, e := nextEvent(t, b, after); string(e.Payload) != "new" {
		t.Fatalf("event after the recovered ones = %q, want the new one", e.Payload)
	}
}
