package buffer

import (
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas/config"
)

var reclaimBytes = config.ByteSize(200 << 20)

func init() {
	flag.Var(&reclaimBytes, "reclaim-bytes", "how much data TestReclamation passes through the buffer (e.g. 1GiB)")
}

// TestReclamation passes reclaimBytes of readings through the buffer while a
// forwarder acknowledges them, and checks that the directory stays small
// during the run and shrinks back under a bound once everything is
// acknowledged: Badger alone would keep every deleted entry's tombstone.
//
//	go test ./edge/internal/buffer/ -run TestReclamation -v -reclaim-bytes=1GiB
func TestReclamation(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBytes = 256 << 20 // segments of 16 MiB
	cfg.BatchMaxReadings = 10000
	b := open(t, cfg)
	start(t, b)
	stopAck := acker(t, b)
	defer stopAck()

	seg := b.segBytes
	// Badger's fixed footprint (memtable WAL, value log, manifest, an L0
	// table or two) plus the current and one not yet reclaimed segment.
	bound := 2*seg + 24<<20
	rs := readings(0, 10000)
	w0, _ := procIO("write_bytes")
	t0 := time.Now()
	var peak int64
	n := 0
	for b.Stats().WrittenBytes < int64(reclaimBytes) {
		appendWait(t, b, rs)
		n += len(rs)
		if n%1_000_000 == 0 {
			b.updateDisk()
			peak = max(peak, b.Stats().DiskBytes)
		}
	}
	el := time.Since(t0)
	if b.Stats().OpenReadings > 0 {
		next(t, b, b.Stats().NextSeq-1) // seals the open batch
	}
	checkFor(t, 60*time.Second, 10*time.Millisecond, func() error {
		b.updateDisk()
		st := b.Stats()
		if st.BufferedReadings != 0 || st.DiskBytes > bound {
			return fmt.Errorf("%d readings buffered, directory %d MiB, bound %d MiB, %d segments",
				st.BufferedReadings, st.DiskBytes>>20, bound>>20, st.Segments)
		}
		return nil
	})
	st := b.Stats()
	w1, _ := procIO("write_bytes")
	t.Logf("%d readings, %d MiB written (%.1f B/reading) in %v; directory peak %d MiB, after %d MiB (%d KiB apparent), segments of %d MiB; write_bytes %.1f B/reading",
		n, st.WrittenBytes>>20, float64(st.WrittenBytes)/float64(n), el.Round(time.Millisecond), peak>>20,
		st.DiskBytes>>20, st.DiskApparentBytes>>10, seg>>20, float64(w1-w0)/float64(n))
	if peak > 2*bound {
		t.Fatalf("directory peaked at %d MiB while everything was acknowledged promptly", peak>>20)
	}
}
