package streams

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/gateway/internal/natsserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func telemetry() Spec {
	return Spec{
		Name: "TELEMETRY", Subjects: []string{"telemetry.eu.>"}, MaxAge: 7 * 24 * time.Hour,
		Duplicates: 10 * time.Minute, Replicas: 1, Discard: jetstream.DiscardNew,
	}
}

func TestDrift(t *testing.T) {
	base := telemetry().Config()
	// What the server returns for a stream created from base.
	base.MaxMsgs, base.MaxConsumers, base.MaxMsgsPerSubject = -1, -1, -1

	tests := []struct {
		name   string
		have   func(c *jetstream.StreamConfig)
		want   func(s *Spec)
		fields []string
	}{
		{name: "same"},
		{name: "unset replicas is one", have: func(c *jetstream.StreamConfig) { c.Replicas = 0 }},
		{name: "subject order does not matter",
			have: func(c *jetstream.StreamConfig) { c.Subjects = []string{"b.>", "a.>"} },
			want: func(s *Spec) { s.Subjects = []string{"a.>", "b.>"} }},
		{name: "operator changed max age", have: func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }, fields: []string{"max_age"}},
		{name: "config changed limits",
			want:   func(s *Spec) { s.MaxBytes = 1 << 30; s.Duplicates = time.Minute; s.Discard = jetstream.DiscardOld },
			fields: []string{"max_bytes", "duplicates", "discard"}},
		{name: "zero duplicates leaves the server's window", want: func(s *Spec) { s.Duplicates = 0 }},
		{name: "subjects", want: func(s *Spec) { s.Subjects = []string{"telemetry.us.>"} }, fields: []string{"subjects"}},
		{name: "storage", have: func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }, fields: []string{"storage"}},
		{name: "retention", have: func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }, fields: []string{"retention"}},
		{name: "unmanaged settings are ignored", have: func(c *jetstream.StreamConfig) {
			c.Description = "set by hand"
			c.Compression = jetstream.S2Compression
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have, want := base, telemetry()
			have.Subjects = slices.Clone(base.Subjects)
			if tt.have != nil {
				tt.have(&have)
			}
			if tt.want != nil {
				tt.want(&want)
			}
			var fields []string
			for _, c := range Drift(have, want) {
				fields = append(fields, c.Field)
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("drift in %v, want %v", fields, tt.fields)
			}
		})
	}
}

func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := natsserver.Start(context.Background(), natsserver.Config{
		ServerName: "streams-test", Domain: "eu", Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
		Sync: natsserver.SyncInterval(time.Second),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	js := startJetStream(t)
	events := Spec{Name: "EVENTS", Subjects: []string{"events.eu.>"}, MaxAge: 24 * time.Hour, Duplicates: time.Minute, Discard: jetstream.DiscardOld}
	specs := []Spec{telemetry(), events}

	actions := func(rs []Result) []Action {
		var out []Action
		for _, r := range rs {
			out = append(out, r.Action)
		}
		return out
	}

	rs, err := Reconcile(ctx, js, specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(rs); !slices.Equal(got, []Action{Created, Created}) {
		t.Fatalf("first reconcile: %v", got)
	}
	st, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.Storage != jetstream.FileStorage || cfg.Duplicates != 10*time.Minute || cfg.MaxAge != 7*24*time.Hour ||
		cfg.Discard != jetstream.DiscardNew || cfg.MaxBytes != -1 || cfg.Replicas != 1 {
		t.Fatalf("created config: %+v", cfg)
	}

	rs, err = Reconcile(ctx, js, specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(rs); !slices.Equal(got, []Action{Unchanged, Unchanged}) {
		t.Fatalf("second reconcile: %v", got)
	}

	// An operator shortens the age limit and adds a description by hand.
	cfg.MaxAge = time.Hour
	cfg.Description = "kept"
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// The configuration now also caps the size.
	specs[0].MaxBytes = 64 << 20
	rs, err = Reconcile(ctx, js, specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(rs); !slices.Equal(got, []Action{Updated, Unchanged}) {
		t.Fatalf("drift reconcile: %v", got)
	}
	if len(rs[0].Changes) != 2 {
		t.Errorf("changes: %v", rs[0].Changes)
	}
	st, err = js.Stream(ctx, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	cfg = st.CachedInfo().Config
	if cfg.MaxAge != 7*24*time.Hour || cfg.MaxBytes != 64<<20 || cfg.Description != "kept" {
		t.Fatalf("updated config: %+v", cfg)
	}
}

func TestReconcileImmutable(t *testing.T) {
	ctx := context.Background()
	js := startJetStream(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "TELEMETRY", Subjects: []string{"telemetry.eu.>"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	_, err := Reconcile(ctx, js, []Spec{telemetry()}, nil)
	if !errors.Is(err, ErrImmutable) {
		t.Fatalf("want ErrImmutable, got %v", err)
	}
	t.Log(err)
}

func TestReconcileSubjectOverlap(t *testing.T) {
	ctx := context.Background()
	js := startJetStream(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"telemetry.>"}}); err != nil {
		t.Fatal(err)
	}
	_, err := Reconcile(ctx, js, []Spec{telemetry()}, nil)
	if err == nil {
		t.Fatal("created a stream whose subjects overlap another's")
	}
	t.Log(err)
}
