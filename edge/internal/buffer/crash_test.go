package buffer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// The crash test runs a writer in a child process (this test binary, with
// crashChildEnv set) and kills it with SIGKILL while it appends, seals and
// acknowledges. The child reports on stdout what the buffer confirmed:
//
//	durable <n>           readings 0..n-1 had done(nil)
//	sealed <seq> <lo> <hi> batch seq holds readings lo..hi
//	acked <seq>           Ack(seq) returned nil
const crashChildEnv = "UPDRAFT_BUFFER_CRASH_CHILD_DIR"

func crashConfig(dir string) Config {
	c := DefaultConfig()
	c.Dir = dir
	c.CommitInterval = time.Millisecond
	c.BatchMaxReadings = 500
	c.BatchMaxAge = 20 * time.Millisecond
	return c
}

func readingIndex(r schemas.Reading) int { return int((r.TS - reading(0).TS) / 1_000_000) }

func crashChild() {
	b, err := Open(crashConfig(os.Getenv(crashChildEnv)), testEdge, nil, nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	var out sync.Mutex
	say := func(format string, a ...any) {
		out.Lock()
		fmt.Printf(format+"\n", a...)
		out.Unlock()
	}
	go func() { _ = b.Run(context.Background()) }()
	if os.Getenv(eventCrashChildEnv) != "" {
		eventCrashChild(b)
	}
	go func() {
		var after uint64
		for {
			s, err := b.Next(context.Background(), after)
			if err != nil {
				say("error %v", err)
				return
			}
			after = s.ID.Seq
			say("sealed %d %d %d", s.ID.Seq, readingIndex(s.Readings[0]), readingIndex(s.Readings[len(s.Readings)-1]))
			if s.ID.Seq%2 == 1 {
				if err := b.Ack(s.ID.Seq); err == nil {
					say("acked %d", s.ID.Seq)
				}
			}
		}
	}()
	const step = 37
	for i := 0; ; i += step {
		errc := make(chan error, 1)
		b.Append(schemas.KindRaw, readings(i, step), func(err error) { errc <- err })
		if err := <-errc; err != nil {
			say("error %v", err)
			select {}
		}
		say("durable %d", i+step)
	}
}

type crashReport struct {
	mu      sync.Mutex
	durable int
	sealed  map[uint64][2]int
	acked   map[uint64]bool
}

func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	var lastSeq uint64
	for round := range 3 {
		rep := &crashReport{sealed: map[uint64][2]int{}, acked: map[uint64]bool{}}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan struct{})
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var a, b, c int
				rep.mu.Lock()
				switch line := sc.Text(); {
				case scan(line, "durable %d", &a):
					rep.durable = a
				case scan(line, "sealed %d %d %d", &a, &b, &c):
					rep.sealed[uint64(a)] = [2]int{b, c}
				case scan(line, "acked %d", &a):
					rep.acked[uint64(a)] = true
				default:
					t.Errorf("child: %s", line)
				}
				rep.mu.Unlock()
			}
		}()
		// Kill at a different moment each round.
		target := 2000 + 1500*round
		checkFor(t, 60*time.Second, time.Millisecond, func() error {
			rep.mu.Lock()
			defer rep.mu.Unlock()
			if rep.durable < target || len(rep.acked) < 2 {
				return fmt.Errorf("child has %d durable readings, %d acks", rep.durable, len(rep.acked))
			}
			return nil
		})
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-lines
		_ = cmd.Wait()
		// Sequences never repeat within the epoch, across crashes and restarts.
		for seq := range rep.sealed {
			if seq <= lastSeq {
				t.Fatalf("round %d sealed batch %d, but %d was already used", round, seq, lastSeq)
			}
		}
		lastSeq = verifyAfterCrash(t, dir, rep)
	}
}

func scan(line, format string, args ...any) bool {
	n, err := fmt.Sscanf(line, format, args...)
	return err == nil && n == len(args)
}

// verifyAfterCrash reopens the buffer and checks: every batch the child saw
// sealed and did not see acknowledged comes back with the same sequence and
// the same readings; every reading the child saw durable is delivered exactly
// once across acknowledged and recovered batches; nothing is duplicated.
func verifyAfterCrash(t *testing.T, dir string, rep *crashReport) (lastSeq uint64) {
	t.Helper()
	b, err := Open(crashConfig(dir), testEdge, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	}()
	seen := map[int]uint64{} // reading index -> batch
	claim := func(seq uint64, lo, hi int) {
		for i := lo; i <= hi; i++ {
			if prev, dup := seen[i]; dup {
				t.Fatalf("reading %d in batch %d and batch %d", i, prev, seq)
			}
			seen[i] = seq
		}
	}
	for seq := range rep.acked {
		r := rep.sealed[seq]
		claim(seq, r[0], r[1])
	}
	got := map[uint64]bool{}
	var after uint64
	for {
		wctx, wcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		s, err := b.Next(wctx, after)
		wcancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		after = s.ID.Seq
		if rep.acked[s.ID.Seq] {
			t.Fatalf("acknowledged batch %d delivered again", s.ID.Seq)
		}
		lo, hi := readingIndex(s.Readings[0]), readingIndex(s.Readings[len(s.Readings)-1])
		sameReadings(t, s.Readings, readings(lo, hi-lo+1))
		if want, ok := rep.sealed[s.ID.Seq]; ok && want != [2]int{lo, hi} {
			t.Fatalf("batch %d holds %d..%d after the crash, %d..%d before", s.ID.Seq, lo, hi, want[0], want[1])
		}
		got[s.ID.Seq] = true
		claim(s.ID.Seq, lo, hi)
		if err := b.Ack(s.ID.Seq); err != nil {
			t.Fatal(err)
		}
	}
	for seq, r := range rep.sealed {
		if !got[seq] && !rep.acked[seq] {
			// Only an Ack whose report was cut by the kill may be missing.
			if seq%2 == 0 {
				t.Fatalf("sealed, unacknowledged batch %d (%d..%d) lost", seq, r[0], r[1])
			}
			claim(seq, r[0], r[1])
		}
	}
	for i := range rep.durable {
		if _, ok := seen[i]; !ok {
			t.Fatalf("durable reading %d lost (child confirmed %d)", i, rep.durable)
		}
	}
	t.Logf("child confirmed %d readings in %d batches (%d acked); recovered %d batches", rep.durable, len(rep.sealed), len(rep.acked), len(got))
	return max(after, b.Stats().NextSeq-1)
}
