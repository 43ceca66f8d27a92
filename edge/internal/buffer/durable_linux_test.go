package buffer

import (
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkDurableWrite compares the two ways to make an appended commit
// durable, per commit of 4,000 bytes (about 70 MQTT messages of 4 readings,
// as in the ingest benchmark): copying it into a shared memory mapping and
// msync(MS_SYNC), as Badger does for its value log and WAL, against
// pwrite(2) and fdatasync(2). CPU-µs/op is the process's user and system
// time per commit; compare the two in one run.
//
//	go test -run '^$' -bench DurableWrite -benchtime 2000x ./edge/internal/buffer/
func BenchmarkDurableWrite(b *testing.B) {
	const chunk, size = 4000, 256 << 20
	dir := b.TempDir()
	if d := os.Getenv("UPDRAFT_BUFFER_BENCH_DIR"); d != "" {
		dir = d
	}
	data := make([]byte, chunk)
	for i := range data {
		data[i] = byte(i)
	}
	open := func(b *testing.B) *os.File {
		f, err := os.CreateTemp(dir, "durable")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close(); os.Remove(f.Name()) })
		if err := f.Truncate(size); err != nil { // sparse, as Badger's files
			b.Fatal(err)
		}
		if b.N*chunk > size {
			b.Fatalf("b.N %d: at most %d commits", b.N, size/chunk)
		}
		return f
	}
	run := func(b *testing.B, commit func(off int) error) {
		w0, _ := procIO("write_bytes")
		c0 := cpuTime()
		b.ResetTimer()
		for i := range b.N {
			if err := commit(i * chunk); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		w1, _ := procIO("write_bytes")
		b.ReportMetric(float64((cpuTime()-c0).Microseconds())/float64(b.N), "CPU-µs/op")
		b.ReportMetric(float64(w1-w0)/float64(b.N), "write-B/op")
	}
	b.Run("mmap_msync", func(b *testing.B) {
		f := open(b)
		m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Munmap(m)
		run(b, func(off int) error {
			copy(m[off:], data)
			return unix.Msync(m, unix.MS_SYNC)
		})
	})
	b.Run("pwrite_fdatasync", func(b *testing.B) {
		f := open(b)
		run(b, func(off int) error {
			if _, err := f.WriteAt(data, int64(off)); err != nil {
				return err
			}
			return unix.Fdatasync(int(f.Fd()))
		})
	})
}

// cpuTime is the user and system CPU time of this process so far (as the
// cloud packages' benchmarks measure it).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
