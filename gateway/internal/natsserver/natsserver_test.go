package natsserver

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseSyncInterval(t *testing.T) {
	tests := []struct {
		in      string
		want    SyncInterval
		wantErr bool
	}{
		{in: "always", want: SyncAlways},
		{in: " Always ", want: SyncAlways},
		{in: "1s", want: SyncInterval(time.Second)},
		{in: "2m", want: SyncInterval(2 * time.Minute)},
		{in: "0s", wantErr: true},
		{in: "-1s", wantErr: true},
		{in: "", wantErr: true},
		{in: "sometimes", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseSyncInterval(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSyncInterval(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSyncIntervalYAML(t *testing.T) {
	var v struct {
		Sync SyncInterval `yaml:"sync"`
	}
	if err := yaml.Unmarshal([]byte("sync: 500ms\n"), &v); err != nil || v.Sync != SyncInterval(500*time.Millisecond) {
		t.Fatalf("got %v, %v", v.Sync, err)
	}
	if err := yaml.Unmarshal([]byte("sync: always\n"), &v); err != nil || !v.Sync.Always() {
		t.Fatalf("got %v, %v", v.Sync, err)
	}
	if err := yaml.Unmarshal([]byte("sync: never\n"), &v); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("want an error naming the line, got %v", err)
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "sync: always\n" {
		t.Fatalf("marshal: %q, %v", out, err)
	}
}

func FuzzParseSyncInterval(f *testing.F) {
	for _, s := range []string{"always", "1s", "2m0s", "0", "-5ms", "1h2m3.5s", "ALWAYS", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSyncInterval(s)
		if err != nil {
			return
		}
		if !v.Always() && v <= 0 {
			t.Fatalf("%q parsed to non-positive %v", s, v)
		}
		again, err := ParseSyncInterval(v.String())
		if err != nil || again != v {
			t.Fatalf("%q -> %v -> %v, %v: does not round-trip", s, v, again, err)
		}
	})
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		check func(t *testing.T, o *server.Options)
		err   string
	}{
		{
			name: "port 0 means random, sync always",
			cfg:  Config{Listen: "127.0.0.1:0", Monitor: "127.0.0.1:0", Sync: SyncAlways, Domain: "eu"},
			check: func(t *testing.T, o *server.Options) {
				if o.Port != server.RANDOM_PORT || o.HTTPPort != server.RANDOM_PORT || o.Host != "127.0.0.1" {
					t.Errorf("ports: %s:%d http %d", o.Host, o.Port, o.HTTPPort)
				}
				if !o.SyncAlways || !o.JetStream || o.JetStreamDomain != "eu" || !o.NoSigs {
					t.Errorf("options: %+v", o)
				}
			},
		},
		{
			name: "monitor off, sync interval",
			cfg:  Config{Listen: "0.0.0.0:4222", Sync: SyncInterval(time.Second)},
			check: func(t *testing.T, o *server.Options) {
				if o.Port != 4222 || o.HTTPPort != 0 || o.SyncAlways || o.SyncInterval != time.Second {
					t.Errorf("options: port %d http %d sync %v/%v", o.Port, o.HTTPPort, o.SyncAlways, o.SyncInterval)
				}
			},
		},
		{name: "bad listen", cfg: Config{Listen: "4222"}, err: "nats listen address"},
		{name: "bad port", cfg: Config{Listen: "127.0.0.1:99999"}, err: "nats listen address"},
		{name: "bad monitor", cfg: Config{Listen: "127.0.0.1:0", Monitor: "x:y"}, err: "nats monitor address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.cfg.Options()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("want error %q, got %v", tt.err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func testConfig(t *testing.T) Config {
	return Config{
		ServerName: "test", Domain: "test", Listen: "127.0.0.1:0", Monitor: "127.0.0.1:0",
		StoreDir: t.TempDir(), Sync: SyncInterval(time.Second),
	}
}

func TestStartAndState(t *testing.T) {
	srv, err := Start(context.Background(), testConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if srv.MonitorAddr() == nil {
		t.Fatal("monitoring not served")
	}

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := js.Publish("s.x", []byte("hello")); err != nil {
			t.Fatal(err)
		}
	}

	states, err := Streams(srv)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 {
		t.Fatalf("streams: %+v", states)
	}
	s := states[0]
	if s.Name != "S" || s.Messages != 3 || s.FirstSeq != 1 || s.LastSeq != 3 || s.Bytes == 0 || len(s.Subjects) != 1 {
		t.Errorf("state: %+v", s)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() *server.Server { return srv }))
	want := `
# HELP updraft_gateway_stream_messages Messages held by the stream.
# TYPE updraft_gateway_stream_messages gauge
updraft_gateway_stream_messages{account="$G",stream="S"} 3
# HELP updraft_gateway_connections Client connections open now.
# TYPE updraft_gateway_connections gauge
updraft_gateway_connections 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"updraft_gateway_stream_messages", "updraft_gateway_connections"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n < 10 {
		t.Errorf("gathered %d metrics, %v", n, err)
	}
}

func TestCollectorWithoutServer(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() *server.Server { return nil }))
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("gathered %d metrics, %v; want none", n, err)
	}
}

func TestStartPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, field := range []string{"listen", "monitor"} {
		t.Run(field, func(t *testing.T) {
			cfg := testConfig(t)
			if field == "listen" {
				cfg.Listen = ln.Addr().String()
			} else {
				cfg.Monitor = ln.Addr().String()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			srv, err := Start(ctx, cfg, nil)
			if err == nil {
				srv.Shutdown()
				t.Fatal("started on a port in use")
			}
			if ctx.Err() != nil || !strings.Contains(err.Error(), "address already in use") {
				t.Fatalf("want a prompt bind error, got %v", err)
			}
		})
	}
}
