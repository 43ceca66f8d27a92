package buffer

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

// procIO reads a counter of /proc/self/io: write_bytes is what this process
// caused to be written to the block device (page-cache writeback included).
func procIO(name string) (int64, bool) {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok && k == name {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// procStatus reads a memory line of /proc/self/status in bytes.
func procStatus(name string) int64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == name {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// Benchmarks can put the buffer on a dedicated block device to count what
// really reaches the disk, file system journal included:
//
//	UPDRAFT_BUFFER_BENCH_DIR=/mnt/scratch UPDRAFT_BUFFER_BENCH_DEV=loop0 go test -bench . -run '^$'
//
// /proc/self/io's write_bytes (reported always) counts dirtied page-cache
// folios, which overstates small writes into large folios.
func benchConfig(b *testing.B) Config {
	cfg := testConfig(b)
	if dir := os.Getenv("UPDRAFT_BUFFER_BENCH_DIR"); dir != "" {
		d, err := os.MkdirTemp(dir, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		cfg.Dir = d
	}
	return cfg
}

// devWritten is the bytes written to the benchmark's block device so far.
func devWritten() (int64, bool) {
	dev := os.Getenv("UPDRAFT_BUFFER_BENCH_DEV")
	if dev == "" {
		return 0, false
	}
	_ = exec.Command("sync").Run()
	data, err := os.ReadFile("/sys/block/" + dev + "/stat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(data))
	if len(f) < 7 {
		return 0, false
	}
	n, err := strconv.ParseInt(f[6], 10, 64)
	return n * 512, err == nil
}

// ackAll acknowledges every sealed batch, as a forwarder that keeps up would,
// without the cost of decoding them.
func ackAll(b *Buffer) (int, error) {
	b.mu.Lock()
	seqs := make([]uint64, 0, len(b.s.batches))
	for _, m := range b.s.batches {
		seqs = append(seqs, m.seq)
	}
	b.mu.Unlock()
	for _, seq := range seqs {
		if err := b.Ack(seq); err != nil {
			return 0, err
		}
	}
	return len(seqs), nil
}

// acker acknowledges sealed batches until stop is called.
func acker(tb testing.TB, b *Buffer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := ackAll(b); err != nil {
					tb.Error(err)
					return
				}
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// BenchmarkAppend measures group-commit throughput: `writers` goroutines
// each append `per` readings and wait for done (an MQTT handler waiting for
// its PUBACK), while a forwarder acknowledges every sealed batch.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct{ writers, per int }{{256, 1}, {64, 10}, {8, 1000}} {
		for _, profile := range []string{ProfileDevice, ProfileServer} {
			b.Run(fmt.Sprintf("profile=%s/writers=%d/per_append=%d", profile, c.writers, c.per), func(b *testing.B) {
				cfg := benchConfig(b)
				cfg.CommitInterval = 2 * time.Millisecond
				cfg.BatchMaxReadings = 10000
				cfg.Profile = profile
				buf := open(b, cfg)
				start(b, buf)
				stopAck := acker(b, buf)
				defer stopAck()
				batches := make([][]schemas.Reading, 64)
				for i := range batches {
					batches[i] = readings(i*c.per, c.per)
				}
				w0, _ := procIO("write_bytes")
				d0, _ := devWritten()
				c0 := buf.Stats().Commits
				var next atomic.Int64
				b.ResetTimer()
				t0 := time.Now()
				var wg sync.WaitGroup
				for w := range c.writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errc := make(chan error, 1)
						done := func(err error) { errc <- err }
						for i := w; next.Add(int64(c.per)) <= int64(b.N); i++ {
							buf.Append(schemas.KindRaw, batches[i%len(batches)], done)
							if err := <-errc; err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				el := time.Since(t0)
				b.StopTimer()
				n := float64(max(b.N, c.per))
				w1, ok := procIO("write_bytes")
				d1, dok := devWritten()
				st := buf.Stats()
				b.ReportMetric(n/el.Seconds(), "readings/s")
				b.ReportMetric(n/float64(max(st.Commits-c0, 1)), "readings/commit")
				b.ReportMetric(float64(st.WrittenBytes)/n, "badger_B/reading")
				if ok {
					b.ReportMetric(float64(w1-w0)/n, "write_bytes/reading")
				}
				if dok {
					b.ReportMetric(float64(d1-d0)/n, "dev_B/reading")
				}
				b.ReportMetric(float64(procStatus("VmHWM"))/(1<<20), "peak_RSS_MiB")
			})
		}
	}
}

// BenchmarkBacklog appends without a forwarder, as during an uplink outage,
// and reports the encoded and on-disk size per reading and the peak memory.
// VmHWM is per process: run one profile at a time for a clean number,
//
//	go test -run '^$' -bench 'Backlog/profile=device' -benchtime 5000000x
func BenchmarkBacklog(b *testing.B) {
	for _, profile := range []string{ProfileDevice, ProfileServer} {
		b.Run("profile="+profile, func(b *testing.B) {
			cfg := benchConfig(b)
			cfg.BatchMaxReadings = 10000
			cfg.Profile = profile
			buf := open(b, cfg)
			start(b, buf)
			rs := readings(0, 1000)
			w0, _ := procIO("write_bytes")
			d0, _ := devWritten()
			b.ResetTimer()
			t0 := time.Now()
			n := 0
			for n < b.N {
				appendWait(b, buf, rs)
				n += len(rs)
			}
			el := time.Since(t0)
			b.StopTimer()
			buf.updateDisk()
			st := buf.Stats()
			w1, ok := procIO("write_bytes")
			d1, dok := devWritten()
			b.ReportMetric(float64(n)/el.Seconds(), "readings/s")
			b.ReportMetric(float64(st.BufferedBytes)/float64(n), "encoded_B/reading")
			b.ReportMetric(float64(st.DiskBytes)/float64(n), "dir_B/reading")
			if ok {
				b.ReportMetric(float64(w1-w0)/float64(n), "write_bytes/reading")
			}
			if dok {
				b.ReportMetric(float64(d1-d0)/float64(n), "dev_B/reading")
			}
			b.ReportMetric(float64(procStatus("VmHWM"))/(1<<20), "peak_RSS_MiB")
			b.ReportMetric(float64(procStatus("RssAnon"))/(1<<20), "anon_RSS_MiB")
			b.ReportMetric(float64(procStatus("RssFile"))/(1<<20), "file_RSS_MiB")
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live_heap_MiB")

		})
	}
}

// BenchmarkReopen measures Open with a backlog of 2,000,000 unsent readings
// (about 200 batches): recovery reads seal records and keys, not readings.
func BenchmarkReopen(b *testing.B) {
	cfg := benchConfig(b)
	cfg.BatchMaxReadings = 10000
	buf := open(b, cfg)
	stop := start(b, buf)
	rs := readings(0, 10000)
	for range 200 {
		appendWait(b, buf, rs)
	}
	appendWait(b, buf, rs[:5000]) // and an open batch
	stop()
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		buf, err := Open(cfg, testEdge, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		if st := buf.Stats(); st.BufferedReadings != 2_005_000 {
			b.Fatalf("recovered %d readings", st.BufferedReadings)
		}
		if err := buf.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(t0).Milliseconds())/float64(b.N), "ms/open")
}

// BenchmarkSteadyRSS feeds the buffer at a Raspberry Pi's pace (4 writers
// appending 20 readings every millisecond or as fast as their commits allow,
// about 20,000 readings/s here) for 20 s, with a forwarder that keeps up or
// with none (an outage: the backlog grows, Badger flushes and compacts), and
// reports the process's memory. Run one case at a time:
//
//	go test -run '^$' -bench 'SteadyRSS/forwarder=true' -benchtime 1x
func BenchmarkSteadyRSS(b *testing.B) {
	for _, forwarding := range []bool{true, false} {
		b.Run(fmt.Sprintf("forwarder=%v", forwarding), func(b *testing.B) {
			base := procStatus("VmRSS")
			cfg := benchConfig(b)
			buf := open(b, cfg)
			start(b, buf)
			if forwarding {
				stopAck := acker(b, buf)
				defer stopAck()
			}
			rs := readings(0, 20)
			end := time.Now().Add(20 * time.Second)
			var n atomic.Int64
			var peak atomic.Int64
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tick := time.NewTicker(time.Millisecond)
					defer tick.Stop()
					for time.Now().Before(end) {
						<-tick.C
						appendWait(b, buf, rs)
						if n.Add(int64(len(rs)))%20000 == 0 {
							peak.Store(max(peak.Load(), procStatus("VmRSS")))
						}
					}
				}()
			}
			wg.Wait()
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(n.Load())/20, "readings/s")
			b.ReportMetric(float64(base)/(1<<20), "rss_before_MiB")
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak_RSS_MiB")
			b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live_heap_MiB")
		})
	}
}
