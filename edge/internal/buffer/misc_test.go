package buffer

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

func TestCheckArch(t *testing.T) {
	if err := checkArch(64); err != nil {
		t.Fatal(err)
	}
	err := checkArch(32)
	if !errors.Is(err, ErrUnsupportedPlatform) {
		t.Fatalf("checkArch(32) = %v", err)
	}
	for _, s := range []string{"32-bit", "Badger loses data", "linux/arm64", "linux/amd64"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key    string
		change func(*Config)
	}{
		{"buffer.dir", func(c *Config) { c.Dir = "" }},
		{"buffer.max_bytes", func(c *Config) { c.MaxBytes = 1000 }},
		{"buffer.max_age", func(c *Config) { c.MaxAge = -time.Second }},
		{"buffer.policy", func(c *Config) { c.Policy = "drop_newest" }},
		{"buffer.commit_interval", func(c *Config) { c.CommitInterval = -1 }},
		{"buffer.commit_interval", func(c *Config) { c.CommitInterval = 2 * time.Second }},
		{"buffer.batch_max_readings", func(c *Config) { c.BatchMaxReadings = 0 }},
		{"buffer.batch_max_readings", func(c *Config) { c.BatchMaxReadings = 1<<20 + 1 }},
		{"buffer.batch_max_age", func(c *Config) { c.BatchMaxAge = 0 }},
		{"buffer.profile", func(c *Config) { c.Profile = "tiny" }},
		{"buffer.compression", func(c *Config) { c.Compression = "zstd" }},
	} {
		cfg := DefaultConfig()
		c.change(&cfg)
		err := cfg.Validate()
		var cerr *config.Error
		if !errors.As(err, &cerr) || cerr.Key != c.key {
			t.Errorf("%s: Validate = %v", c.key, err)
		}
	}
	// Every problem is reported at once.
	cfg := DefaultConfig()
	cfg.Policy, cfg.Profile = "x", "y"
	if err := cfg.Validate(); !strings.Contains(err.Error(), "buffer.policy") || !strings.Contains(err.Error(), "buffer.profile") {
		t.Fatalf("Validate = %v", err)
	}
}

func TestConfigYAML(t *testing.T) {
	cfg := DefaultConfig()
	err := config.Load([]byte("dir: /var/lib/updraft/buffer\nmax_bytes: 2GiB\npolicy: downsample\ncommit_interval: 20ms\n"), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxBytes != 2<<30 || cfg.Policy != PolicyDownsample || cfg.CommitInterval != 20*time.Millisecond || cfg.BatchMaxReadings != 10000 {
		t.Fatalf("loaded %+v", cfg)
	}
	var help strings.Builder
	config.Describe(&help, DefaultConfig())
	for _, key := range []string{"dir", "max_bytes", "max_age", "policy", "commit_interval", "batch_max_readings",
		"batch_max_age", "encryption_key_file", "profile", "compression"} {
		if !strings.Contains(help.String(), "  "+key+" ") {
			t.Errorf("--help does not document %s:\n%s", key, help.String())
		}
	}
}

func appendMessage(t *testing.T, b *Buffer, rs []schemas.Reading, m Message) {
	t.Helper()
	errc := make(chan error, 1)
	b.AppendMessage(schemas.KindRaw, rs, m, func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestRedeliveredMessages(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	stop := start(t, b)
	k1 := MessageKey("sensors/dev-1/temp", 17, []byte(`{"v":21.5}`))
	if k1 == MessageKey("sensors/dev-1/temp", 18, []byte(`{"v":21.5}`)) || k1 == MessageKey("sensors/dev-2/temp", 17, []byte(`{"v":21.5}`)) {
		t.Fatal("message keys ignore the packet id or topic")
	}
	appendMessage(t, b, readings(0, 1), Message{Key: k1})
	appendMessage(t, b, readings(0, 1), Message{Key: k1, Dup: true}) // a redelivery: skipped
	appendMessage(t, b, readings(1, 1), Message{Key: 99, Dup: true}) // unknown key: stored
	appendMessage(t, b, readings(2, 1), Message{Key: k1})            // not flagged DUP: stored
	if st := b.Stats(); st.BufferedReadings != 3 || st.Duplicates != 1 {
		t.Fatalf("stats %+v", st)
	}
	// After everything is forwarded and the agent restarts, the broker may
	// still re-send what it did not see acknowledged.
	_, last := drain(t, b, 0, 200*time.Millisecond)
	stop()
	b = open(t, cfg)
	start(t, b)
	appendMessage(t, b, readings(0, 1), Message{Key: k1, Dup: true})
	appendMessage(t, b, readings(1, 1), Message{Key: 99, Dup: true})
	if st := b.Stats(); st.BufferedReadings != 0 || st.Duplicates != 2 {
		t.Fatalf("stats after restart %+v", st)
	}
	noNext(t, b, last, 100*time.Millisecond)
}

func TestDedupRingWindow(t *testing.T) {
	var r dedupRing
	for i := range uint64(dedupWindow + 10) {
		r.add(1+i/30000, []uint64{i})
	}
	if r.contains(5) || !r.contains(10) || !r.contains(dedupWindow+9) {
		t.Fatal("ring keeps the wrong window")
	}
	if got := r.pin(100); got != 1 {
		t.Fatalf("pin = %d, want 1 (keys 10..29999 are in segment 1)", got)
	}
	r.add(3, make([]uint64, 40000))
	if got := r.pin(100); got != 2 {
		t.Fatalf("pin = %d, want 2", got)
	}
}

// One Append larger than a Badger transaction is split into several. Chunks
// go to the value log, where only their pointers count against the limit;
// 20,000 device names make as many dictionary entries, past the limit's
// entry count.
func TestLargeAppend(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchMaxReadings = 200_000
	b := open(t, cfg)
	start(t, b)
	rs := readings(0, 300_000)
	for i := range rs {
		rs[i].Device = "dev-" + strconv.Itoa(i%20_000)
	}
	c0 := b.Stats().Commits
	appendWait(t, b, rs)
	if c := b.Stats().Commits - c0; c < 2 {
		t.Fatalf("%d Badger commits for 300,000 readings, want a split", c)
	}
	s := next(t, b, 0)
	sameReadings(t, s.Readings, rs[:200_000])
	s = next(t, b, 1)
	sameReadings(t, s.Readings, rs[200_000:])
}

func TestMetrics(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBytes = MinMaxBytes
	cfg.Policy = PolicyDropOldest
	reg := prometheus.NewRegistry()
	b, err := Open(cfg, testEdge, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, b)
	for i := 0; i < 10_000; i += 500 {
		appendWait(t, b, readings(i, 500))
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n < 10 {
		t.Fatalf("%d series, %v", n, err)
	}
	if v := testutil.ToFloat64(b.m.dropped.WithLabelValues(ReasonMaxBytes)); v == 0 || v != float64(b.Stats().Dropped[ReasonMaxBytes]) {
		t.Fatalf("dropped metric %v, stats %v", v, b.Stats().Dropped)
	}
	for _, name := range []string{"updraft_edge_buffer_readings", "updraft_edge_buffer_disk_bytes", "updraft_edge_buffer_oldest_unsent_age_seconds",
		"updraft_edge_buffer_commits_total", "updraft_edge_buffer_commit_seconds", "updraft_edge_buffer_dropped_readings_total",
		"updraft_edge_buffer_summarised_readings_total"} {
		if c, err := testutil.GatherAndCount(reg, name); err != nil || c == 0 {
			t.Errorf("%s: %d series, %v", name, c, err)
		}
	}
	stop()
	// Close unregisters, so the buffer can be reopened on the same registry.
	b, err = Open(cfg, testEdge, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// Open itself refuses a 32-bit build (run with GOARCH=386 to see it).
func TestOpenChecksPlatform(t *testing.T) {
	b, err := Open(testConfig(t), testEdge, nil, nil)
	if strconv.IntSize == 32 {
		if !errors.Is(err, ErrUnsupportedPlatform) {
			t.Fatalf("Open on a 32-bit build = %v", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCompressionSetting(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		profile, setting string
		want             options.CompressionType
	}{
		{ProfileDevice, "", options.None},
		{ProfileDevice, CompressionSnappy, options.Snappy},
		{ProfileServer, "", options.Snappy},
		{ProfileServer, CompressionNone, options.None},
	} {
		cfg := DefaultConfig()
		cfg.Profile, cfg.Compression = c.profile, c.setting
		if got := cfg.badgerOptions(nil, log).Compression; got != c.want {
			t.Errorf("profile %s, compression %q: Badger compression %v, want %v", c.profile, c.setting, got, c.want)
		}
	}
	// A buffer written with one setting opens and reads with the other.
	cfg := testConfig(t)
	cfg.Compression = CompressionSnappy
	b := open(t, cfg)
	stop := start(t, b)
	appendWait(t, b, readings(0, 5000))
	next(t, b, 0) // seals the batch
	stop()
	cfg.Compression = CompressionNone
	b = open(t, cfg)
	start(t, b)
	if n := b.Stats().BufferedReadings; n != 5000 {
		t.Fatalf("%d readings buffered after reopening without compression, want 5000", n)
	}
	var got int
	for after := uint64(0); got < 5000; {
		s := next(t, b, after)
		got += len(s.Readings)
		after = s.ID.Seq
	}
}

// TestAppendMessageWaitsAtMaxQueued: once maxQueued readings of messages are
// not yet durable, AppendMessage waits until commits make room, and Close
// releases a waiter with ErrClosed.
func TestAppendMessageWaitsAtMaxQueued(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchMaxReadings = 10000
	b := open(t, cfg) // not running yet: nothing is committed
	const per = 1024
	var acked atomic.Int64
	ack := func(err error) {
		if err != nil {
			t.Errorf("done: %v", err)
		}
		acked.Add(1)
	}
	for i := range maxQueued / per {
		b.AppendMessage(schemas.KindRaw, readings(i*per, per), Message{Key: uint64(i)}, ack)
	}
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		b.AppendMessage(schemas.KindRaw, readings(maxQueued, 1), Message{Key: 1 << 40}, ack)
	}()
	select {
	case <-returned:
		t.Fatalf("AppendMessage returned with %d readings queued", maxQueued)
	case <-time.After(200 * time.Millisecond):
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if st := b.Stats(); st.QueuedReadings != maxQueued || st.IntakeWaits != 1 {
			return fmt.Errorf("queued %d readings, %d intake waits; want %d and 1", st.QueuedReadings, st.IntakeWaits, maxQueued)
		}
		return nil
	})
	stop := start(t, b)
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("AppendMessage still waiting after the buffer started committing")
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := acked.Load(); n != maxQueued/per+1 {
			return fmt.Errorf("%d of %d messages acknowledged", n, maxQueued/per+1)
		}
		return nil
	})
	if st := b.Stats(); st.BufferedReadings != maxQueued+1 || st.QueuedReadings != 0 || st.IntakeWaits != 1 {
		t.Fatalf("buffered %d readings, %d queued, %d intake waits; want %d, 0 and 1",
			st.BufferedReadings, st.QueuedReadings, st.IntakeWaits, maxQueued+1)
	}
	stop()

	// A waiter is released by Close, its readings not stored.
	b = open(t, cfg)
	for i := range maxQueued / per {
		b.AppendMessage(schemas.KindRaw, readings(i*per, per), Message{Key: uint64(i)}, func(error) {})
	}
	errc := make(chan error, 1)
	go b.AppendMessage(schemas.KindRaw, readings(maxQueued, 1), Message{Key: 1 << 40}, func(err error) { errc <- err })
	time.Sleep(50 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("waiting AppendMessage after Close: %v, want ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("AppendMessage still waiting after Close")
	}

}
