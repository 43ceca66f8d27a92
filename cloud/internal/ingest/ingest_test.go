package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	pq "github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/cloud/internal/natstest"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// Environment of the child process that TestCrash kills.
const (
	envChild    = "UPDRAFT_TEST_INGEST_CHILD"
	envNATS     = "UPDRAFT_TEST_NATS_URL"
	envLake     = "UPDRAFT_TEST_LAKE_DIR"
	envKillAt   = "UPDRAFT_TEST_KILL_AT"
	childNoKill = "never"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(runChild())
	}
	if dir := os.Getenv(envServerStore); dir != "" {
		os.Exit(runServer(dir))
	}
	goleak.VerifyTestMain(m)
}

var (
	edge1 = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}
	edge2 = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-2"}
)

func lakeConfig(dir string) lake.Config {
	c := lake.DefaultConfig()
	c.Dir = dir
	c.RollInterval = 200 * time.Millisecond
	c.RowGroupRows = lake.MinRowGroupRows
	return c
}

func ingestConfig(url string) Config {
	c := DefaultConfig()
	c.NATS.URL = url
	c.NATS.AckWait = time.Second
	return c
}

// readings returns n readings of edge for batch seq; values encode the
// batch and row so every reading in a test is distinct.
func readings(edge schemas.EdgeID, seq uint64, n int) []schemas.Reading {
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	out := make([]schemas.Reading, n)
	for i := range out {
		out[i] = schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge,
			Device: fmt.Sprintf("dev-%d", i%4), Metric: "temp", Unit: "C",
			TS: base.Add(time.Duration(i) * time.Millisecond).UnixNano(), Value: float64(seq*100_000 + uint64(i))}
	}
	return out
}

func encode(t testing.TB, edge schemas.EdgeID, epoch, seq uint64, n int) *batch.Message {
	t.Helper()
	m, err := batch.Encode(batch.ID{Edge: edge, Epoch: epoch, Seq: seq}, schemas.KindRaw, false, readings(edge, seq, n))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func publish(t testing.TB, js jetstream.JetStream, m *batch.Message) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	if err != nil {
		t.Fatalf("publish %s: %v", m.Header.Get(batch.HdrMsgID), err)
	}
	return ack
}

// running is an Ingester running in the background of a test.
type running struct {
	in     *Ingester
	w      *lake.Writer
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, cfg Config, lc lake.Config, reg prometheus.Registerer) *running {
	t.Helper()
	w, err := lake.Open(lc, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := New(cfg, w, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{in: in, w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- in.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run, waits for it and closes the lake; it returns Run's error.
func (r *running) stop(t testing.TB) error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	var err error
	select {
	case err = <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return 15s after cancel")
	}
	r.w.Close()
	return err
}

func waitRows(t testing.TB, w *lake.Writer, rows int64) {
	t.Helper()
	natstest.WaitFor(t, 20*time.Second, func() error {
		if got := w.Totals(); got.Rows != rows || got.PendingRows != 0 {
			return fmt.Errorf("lake has %d rows (%d pending), want %d", got.Rows, got.PendingRows, rows)
		}
		return nil
	})
}

// waitAcked waits until the consumer has delivered and settled every
// message in the stream.
func waitAcked(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	natstest.WaitFor(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, Stream)
		if err != nil {
			return err
		}
		ci, err := s.Consumer(ctx, Consumer)
		if err != nil {
			return err
		}
		info, err := ci.Info(ctx)
		if err != nil {
			return err
		}
		last := s.CachedInfo().State.LastSeq
		if si, err := s.Info(ctx); err == nil {
			last = si.State.LastSeq
		}
		if info.AckFloor.Stream != last || info.NumAckPending != 0 {
			return fmt.Errorf("consumer ack floor %d, pending %d; stream last seq %d", info.AckFloor.Stream, info.NumAckPending, last)
		}
		return nil
	})
}

type lakeRow struct {
	TS     time.Time `parquet:"ts,timestamp(nanosecond)"`
	Region string    `parquet:"region"`
	Site   string    `parquet:"site"`
	Edge   string    `parquet:"edge"`
	Device string    `parquet:"device"`
	Metric string    `parquet:"metric"`
	Value  float64   `parquet:"value"`
	Unit   *string   `parquet:"unit,optional"`
}

// lakeReadings reads every committed file with parquet-go and counts each
// distinct reading.
func lakeReadings(t testing.TB, dir string) map[schemas.Reading]int {
	t.Helper()
	out := map[schemas.Reading]int{}
	err := filepath.WalkDir(filepath.Join(dir, lakefmt.RawDir), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !lakefmt.IsDataFile(d.Name()) {
			return err
		}
		rows, err := pq.ReadFile[lakeRow](p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		for _, r := range rows {
			rd := schemas.Reading{Region: r.Region, Site: r.Site, Edge: r.Edge, Device: r.Device, Metric: r.Metric,
				TS: r.TS.UnixNano(), Value: r.Value}
			if r.Unit != nil {
				rd.Unit = *r.Unit
			}
			out[rd]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkExactlyOnce asserts the lake holds exactly the readings of batches
// 1..n of each edge, each once.
func checkExactlyOnce(t testing.TB, dir string, per int, edges map[schemas.EdgeID]uint64) {
	t.Helper()
	got := lakeReadings(t, dir)
	want := 0
	for e, n := range edges {
		for seq := uint64(1); seq <= n; seq++ {
			for _, r := range readings(e, seq, per) {
				want++
				if got[withTS(r, got)] != 1 {
					t.Fatalf("reading %+v is in the lake %d times, want once", r, got[withTS(r, got)])
				}
			}
		}
	}
	total := 0
	for _, c := range got {
		total += c
	}
	if total != want {
		t.Fatalf("lake holds %d readings, want %d", total, want)
	}
}

// withTS finds r in got ignoring its timestamp, which readings() derives
// from the wall clock; values are unique per edge so they identify a row.
func withTS(r schemas.Reading, got map[schemas.Reading]int) schemas.Reading {
	for g := range got {
		if g.Edge == r.Edge && g.Value == r.Value && g.Device == r.Device {
			return g
		}
	}
	return r
}

func TestBatchesLandInLakeExactlyOnce(t *testing.T) {
	srv := natstest.Start(t, "")
	_, js := natstest.Connect(t, srv)
	natstest.CreateTelemetry(t, js, "local", 10*time.Minute)
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	r := start(t, ingestConfig(srv.ClientURL()), lakeConfig(dir), reg)

	const per = 200
	for seq := uint64(1); seq <= 10; seq++ {
		publish(t, js, encode(t, edge1, 0xe1, seq, per))
		publish(t, js, encode(t, edge2, 0xe2, seq, per))
	}
	// The edge retries a publish whose ack it lost: JetStream drops it.
	if ack := publish(t, js, encode(t, edge1, 0xe1, 3, per)); !ack.Duplicate {
		t.Fatal("republish inside the duplicate window was not a duplicate")
	}
	waitRows(t, r.w, 20*per)
	waitAcked(t, js)
	checkExactlyOnce(t, dir, per, map[schemas.EdgeID]uint64{edge1: 10, edge2: 10})

	st := r.in.Status()
	if !st.Ready || st.RowsCommitted != 20*per || st.BatchesCommitted != 20 || st.LastCommit == nil ||
		st.E2ELatency.Samples != 20*per || st.E2ELatency.P50 <= 0 || st.E2ELatency.Max < st.E2ELatency.P99 {
		t.Errorf("status = %+v", st)
	}
	if got := testutil.ToFloat64(r.in.m.rows); got != 20*per {
		t.Errorf("rows metric = %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "updraft_cloud_e2e_latency_seconds", "updraft_cloud_flush_duration_seconds",
		"updraft_cloud_rejected_total", "updraft_cloud_pending_rows"); err != nil || n != 3+len(rejectReasons) {
		t.Errorf("metrics: %d series, %v", n, err)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v after cancel, want nil", err)
	}
}

func TestWaitsForNATSAndStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	r := start(t, ingestConfig(fmt.Sprintf("nats://127.0.0.1:%d", port)), lakeConfig(dir), nil)
	if err := r.in.Ready(); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("Ready before NATS = %v", err)
	}

	srv := natstest.StartAt(t, "", port, t.TempDir())
	_, js := natstest.Connect(t, srv)
	natstest.WaitFor(t, 20*time.Second, func() error {
		if err := r.in.Ready(); err == nil || !strings.Contains(err.Error(), "waiting for stream") {
			return fmt.Errorf("Ready = %v, want waiting for stream", err)
		}
		return nil
	})
	if _, err := js.Stream(context.Background(), Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("the cloud must not create %s: %v", Stream, err)
	}
	natstest.CreateTelemetry(t, js, "local", time.Minute)
	natstest.WaitFor(t, 20*time.Second, r.in.Ready)
	publish(t, js, encode(t, edge1, 1, 1, 10))
	waitRows(t, r.w, 10)
}

func TestBadMessagesAreQuarantined(t *testing.T) {
	srv := natstest.Start(t, "")
	nc, js := natstest.Connect(t, srv)
	natstest.CreateTelemetry(t, js, "local", time.Minute)
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	r := start(t, ingestConfig(srv.ClientURL()), lakeConfig(dir), reg)

	good := encode(t, edge1, 1, 1, 10)
	corrupt := encode(t, edge1, 1, 2, 10)
	corrupt.Data = corrupt.Data[:len(corrupt.Data)/2]
	wrongCount := encode(t, edge1, 1, 3, 10)
	wrongCount.Header.Set(batch.HdrCount, "11")
	subject := schemas.RawSubject(edge1)
	for _, m := range []*nats.Msg{
		{Subject: subject, Data: []byte("not a batch")},
		{Subject: corrupt.Subject, Header: corrupt.Header, Data: corrupt.Data},
		{Subject: wrongCount.Subject, Header: wrongCount.Header, Data: wrongCount.Data},
		{Subject: good.Subject, Header: good.Header, Data: good.Data},
	} {
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc
	waitRows(t, r.w, 10)
	waitAcked(t, js)
	if st := r.in.Status(); st.Rejected != 3 {
		t.Errorf("rejected = %d, want 3", st.Rejected)
	}
	for reason, want := range map[string]float64{"header": 1, "payload": 1, "mismatch": 1} {
		if got := testutil.ToFloat64(r.in.m.rejected.WithLabelValues(reason)); got != want {
			t.Errorf("rejected{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, lakefmt.RejectedDir, "TELEMETRY-*.json"))
	bodies, _ := filepath.Glob(filepath.Join(dir, lakefmt.RejectedDir, "TELEMETRY-*.bin"))
	if len(files) != 3 || len(bodies) != 3 {
		t.Fatalf("quarantine holds %v and %v, want 3 of each", files, bodies)
	}
	body, _ := os.ReadFile(filepath.Join(dir, lakefmt.RejectedDir, "TELEMETRY-00000000000000000001.bin"))
	if string(body) != "not a batch" {
		t.Errorf("quarantined body = %q", body)
	}
}

// TestRedeliveryAndRepublishAddNoRows covers the two ways a committed batch
// comes back: redelivery of a message whose ack was lost (the writer
// stopped between publishing files and acking), and an edge re-publishing
// the same Nats-Msg-Id after the stream's duplicate window.
func TestRedeliveryAndRepublishAddNoRows(t *testing.T) {
	srv := natstest.Start(t, "")
	_, js := natstest.Connect(t, srv)
	natstest.CreateTelemetry(t, js, "local", 100*time.Millisecond)
	dir := t.TempDir()
	cfg := ingestConfig(srv.ClientURL())

	w, err := lake.Open(lakeConfig(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	errStop := errors.New("stop before ack")
	w.SetHook(func(s lake.Stage) error {
		if s == lake.StageRenamed {
			return errStop
		}
		return nil
	})
	in, err := New(cfg, w, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		publish(t, js, encode(t, edge1, 9, seq, 100))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := in.Run(ctx); !errors.Is(err, errStop) {
		t.Fatalf("Run = %v, want the stop before ack", err)
	}
	w.Close()
	committed := lakeReadings(t, dir)
	if len(committed) == 0 {
		t.Fatal("nothing committed before the stop")
	}

	r := start(t, cfg, lakeConfig(dir), nil)
	waitRows(t, r.w, 500)
	waitAcked(t, js)
	if st := r.in.Status(); st.DuplicatesSkipped == 0 {
		t.Errorf("redelivered batches were not counted as duplicates: %+v", st)
	}
	checkExactlyOnce(t, dir, 100, map[schemas.EdgeID]uint64{edge1: 5})

	// Re-publish batch 2 once the duplicate window has passed: JetStream
	// stores it again, the lake must not.
	dup := encode(t, edge1, 9, 2, 100)
	before := r.in.Status().DuplicatesSkipped
	natstest.WaitFor(t, 10*time.Second, func() error {
		if ack := publish(t, js, dup); ack.Duplicate {
			return errors.New("still inside the duplicate window")
		}
		return nil
	})
	waitAcked(t, js)
	if st := r.in.Status(); st.DuplicatesSkipped != before+1 || st.RowsCommitted != 500 {
		t.Errorf("after re-publish: duplicates %d (was %d), rows %d; want one more duplicate and 500 rows",
			st.DuplicatesSkipped, before, st.RowsCommitted)
	}
	checkExactlyOnce(t, dir, 100, map[schemas.EdgeID]uint64{edge1: 5})
}

// TestCrash kills a real writer process with SIGKILL right after the
// manifest is durable and right after the files are renamed (before any
// ack), restarts, and checks that every batch is in the lake exactly once.
func TestCrash(t *testing.T) {
	for _, stage := range []lake.Stage{lake.StageCommitted, lake.StageRenamed} {
		t.Run(stage.String(), func(t *testing.T) {
			srv := natstest.Start(t, "")
			_, js := natstest.Connect(t, srv)
			natstest.CreateTelemetry(t, js, "local", 10*time.Minute)
			dir := t.TempDir()
			const batches, per = 30, 100
			for seq := uint64(1); seq <= batches; seq++ {
				publish(t, js, encode(t, edge1, 5, seq, per))
			}

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envChild+"=1", envNATS+"="+srv.ClientURL(), envLake+"="+dir,
				envKillAt+"="+strconv.Itoa(int(stage)))
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child = %v, want killed by SIGKILL; output:\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Join(dir, lakefmt.CommitsDir, lakefmt.ManifestName(1))); err != nil {
				t.Fatalf("no manifest after the kill: %v", err)
			}
			if n := len(lakeReadings(t, dir)); stage == lake.StageCommitted && n != 0 {
				t.Fatalf("%d readings visible before roll-forward; the kill came before the rename", n)
			}

			r := start(t, ingestConfig(srv.ClientURL()), lakeConfig(dir), nil)
			waitRows(t, r.w, batches*per)
			waitAcked(t, js)
			checkExactlyOnce(t, dir, per, map[schemas.EdgeID]uint64{edge1: batches})
			if st := r.in.Status(); st.DuplicatesSkipped == 0 {
				t.Errorf("no duplicates skipped: the unacked batches were not redelivered? %+v", st)
			}
		})
	}
}

// runChild is the killed writer of TestCrash.
func runChild() int {
	stage, _ := strconv.Atoi(os.Getenv(envKillAt))
	w, err := lake.Open(lakeConfig(os.Getenv(envLake)), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	w.SetHook(func(s lake.Stage) error {
		if int(s) == stage {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
		return nil
	})
	in, err := New(ingestConfig(os.Getenv(envNATS)), w, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = in.Run(ctx)
	fmt.Fprintln(os.Stderr, "child was not killed:", err)
	return 4
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name, key string
		mut       func(*Config)
	}{
		{"ok", "", func(*Config) {}},
		{"bad region", "region", func(c *Config) { c.Region = "eu.west" }},
		{"empty url", "nats.url", func(c *Config) { c.NATS.URL = "" }},
		{"http url", "nats.url", func(c *Config) { c.NATS.URL = "http://x:4222" }},
		{"bad domain", "nats.domain", func(c *Config) { c.NATS.Domain = "a b" }},
		{"password without user", "nats.user", func(c *Config) { c.NATS.Password = "x" }},
		{"cert without key", "nats.key_file", func(c *Config) { c.NATS.CertFile = "c.pem" }},
		{"short ack wait", "nats.ack_wait", func(c *Config) { c.NATS.AckWait = time.Millisecond }},
		{"no pending", "nats.max_ack_pending", func(c *Config) { c.NATS.MaxAckPending = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mut(&c)
			err := c.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.key+":") || !strings.Contains(err.Error(), "allowed") {
				t.Fatalf("Validate() = %v, want an error naming %s and what is allowed", err, tt.key)
			}
		})
	}
}

func TestLatencyWindow(t *testing.T) {
	w := newLatencyWindow(100)
	if s := w.summary(); s.Samples != 0 {
		t.Fatalf("empty window = %+v", s)
	}
	for i := 1; i <= 250; i++ { // only 151..250 stay
		w.addSince(int64(time.Duration(i)*time.Millisecond), []int64{0})
	}
	want := Latency{Samples: 100, P50: 200, P90: 240, P99: 249, Max: 250}
	if s := w.summary(); s != want {
		t.Errorf("summary = %+v, want %+v", s, want)
	}
}

// TestSurvivesNATSRestart: batches buffered or unacknowledged while the
// server is down are committed once, and consuming resumes after it returns.
func TestSurvivesNATSRestart(t *testing.T) {
	store := t.TempDir()
	srv := natstest.StartAt(t, "", -1, store)
	port := srv.Addr().(*net.TCPAddr).Port
	_, js := natstest.Connect(t, srv)
	natstest.CreateTelemetry(t, js, "local", 10*time.Minute)
	dir := t.TempDir()
	r := start(t, ingestConfig(srv.ClientURL()), lakeConfig(dir), nil)
	for seq := uint64(1); seq <= 5; seq++ {
		publish(t, js, encode(t, edge1, 3, seq, 50))
	}
	waitRows(t, r.w, 250)

	srv.Shutdown()
	srv.WaitForShutdown()
	natstest.WaitFor(t, 10*time.Second, func() error {
		if r.in.Ready() == nil {
			return errors.New("still ready with NATS down")
		}
		return nil
	})
	srv = natstest.StartAt(t, "", port, store)
	_, js = natstest.Connect(t, srv)
	natstest.WaitFor(t, 20*time.Second, r.in.Ready)
	for seq := uint64(6); seq <= 10; seq++ {
		publish(t, js, encode(t, edge1, 3, seq, 50))
	}
	waitRows(t, r.w, 500)
	waitAcked(t, js)
	checkExactlyOnce(t, dir, 50, map[schemas.EdgeID]uint64{edge1: 10})
}
