package ingest

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/cloud/internal/natstest"
	"github.com/updraft-io/updraft/schemas/batch"
)

const (
	// envServerStore makes the test binary a JetStream server with its store
	// in the named directory; it prints its client URL and serves until
	// stdin closes.
	envServerStore = "UPDRAFT_TEST_NATS_SERVER_STORE"
	// envServerCPUs, when set (e.g. "1"), pins that server to those CPUs
	// with taskset, so it does not share the benchmark's core.
	envServerCPUs = "UPDRAFT_BENCH_NATS_CPUS"
)

func runServer(dir string) int {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats server not ready after 10s")
		return 3
	}
	fmt.Println(s.ClientURL())
	bufio.NewReader(os.Stdin).ReadString('\n')
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}

// startServerProcess runs a JetStream server in a child process (this test
// binary, see runServer), so its work is not counted as the benchmark's.
func startServerProcess(b *testing.B) string {
	b.Helper()
	args := []string{os.Args[0], "-test.run=^$"}
	if cpus := os.Getenv(envServerCPUs); cpus != "" {
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), envServerStore+"="+b.TempDir())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start nats server process: %v", err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("nats server process: %v", err)
	}
	return strings.TrimSpace(url)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Workload: as the cloud scenario of docs/performance.md, 100 devices x 3
// metrics, one reading per second, batches of benchPerBatch readings.
const (
	benchPerBatch = natstest.WorkloadPerBatch
	// A backlog of about lake.DefaultConfig().RollRows: one commit as in
	// production, so connecting and binding weigh little.
	benchBatches = 834
)

func benchBatch(b *testing.B, rng *rand.Rand, start time.Time, seq uint64) *batch.Message {
	return natstest.WorkloadBatch(b, rng, edge1, start, seq)
}

// BenchmarkJetStreamToLake measures readings/s from a stream backlog to
// committed Parquet files. The JetStream server runs in another process, so
// with -cpu 1 (and the server pinned elsewhere with UPDRAFT_BENCH_NATS_CPUS)
// the figure is the writer's on one core:
//
//	UPDRAFT_BENCH_NATS_CPUS=1 taskset -c 0 go test -run '^$' -bench JetStreamToLake -cpu 1 ./cloud/internal/ingest/
//
// Each iteration publishes a backlog (not timed), then times a consumer
// session from its start until the backlog is committed. readings/cpu-s
// divides by the CPU time this process used meanwhile.
func BenchmarkJetStreamToLake(b *testing.B) {
	url := startServerProcess(b)
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	natstest.CreateTelemetry(b, js, "local", time.Minute)
	lc := lakeConfig(b.TempDir())
	lc.RollRows = benchPerBatch * benchBatches
	lc.RowGroupRows = lake.DefaultConfig().RowGroupRows
	lc.RollInterval = lake.MaxRollInterval
	// One writer for the whole run, as in a long-running process; a new
	// consumer session (Ingester.Run) per iteration.
	w, err := lake.Open(lc, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Hour)
	seq := uint64(0)
	total := int64(0)
	var elapsed, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		futures := make([]jetstream.PubAckFuture, 0, benchBatches)
		for range benchBatches {
			m := benchBatch(b, rng, start, seq)
			seq++
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
			if err != nil {
				b.Fatal(err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			case <-time.After(30 * time.Second):
				b.Fatal("publish not acknowledged after 30s")
			}
		}
		total += benchPerBatch * benchBatches
		in, err := New(ingestConfig(url), w, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		t0, c0 := time.Now(), cpuTime()
		b.StartTimer()
		go func() { done <- in.Run(ctx) }()
		deadline := time.Now().Add(time.Minute)
		for w.Totals().Rows < total {
			if time.Now().After(deadline) {
				b.Fatalf("%d rows committed after a minute, want %d", w.Totals().Rows, total)
			}
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		elapsed += time.Since(t0)
		cpu += cpuTime() - c0
		cancel()
		if err := <-done; err != nil && err != context.Canceled {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "readings/s")
	b.ReportMetric(float64(total)/cpu.Seconds(), "readings/cpu-s")
}
