package hub

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	pq "github.com/parquet-go/parquet-go"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/cloud/internal/ingest"
	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/cloud/internal/natstest"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startHub runs a hub until the test ends.
func startHub(t *testing.T, regions ...Region) *Hub {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Enabled = true
	cfg.Listen, cfg.LeafListen, cfg.StoreDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Regions = regions
	return runHub(t, cfg)
}

// runHub runs a hub with cfg until the test ends.
func runHub(t *testing.T, cfg Config) *Hub {
	t.Helper()
	h, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub: %v", err)
		}
	})
	select {
	case <-h.Ready():
	case err := <-done:
		t.Fatalf("hub stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("hub not ready after 30s")
	}
	return h
}

// startRegion runs a region's JetStream server (domain = region) that joins
// the hub as a leaf node, with the region's TELEMETRY stream.
func startRegion(t *testing.T, region, leafURL string) jetstream.JetStream {
	t.Helper()
	u, err := url.Parse(leafURL)
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "gw-" + region, Host: "127.0.0.1", Port: -1, JetStream: true, JetStreamDomain: region,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("region server not ready")
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if s.NumLeafNodes() != 1 {
			return fmt.Errorf("region %s not joined to the hub", region)
		}
		return nil
	})
	_, js := natstest.Connect(t, s)
	natstest.CreateTelemetry(t, js, region, 10*time.Minute)
	return js
}

func hubBatch(t *testing.T, edge schemas.EdgeID, kind string, seq uint64) *batch.Message {
	t.Helper()
	base := time.Now().Add(-time.Hour).Truncate(time.Minute).Add(time.Duration(seq) * time.Minute)
	var rs []schemas.Reading
	for d := range 3 {
		r := schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge, Device: fmt.Sprintf("dev-%d", d),
			Metric: "temp", TS: base.UnixNano(), Value: float64(seq*10) + float64(d), Unit: "C"}
		if kind == schemas.KindAgg {
			c := r
			c.Metric, c.Value, c.Unit = "temp:count:1m", 60, ""
			r.Metric = "temp:mean:1m"
			rs = append(rs, c)
		} else {
			for i := range 10 {
				ri := r
				ri.TS += int64(i) * int64(time.Second)
				rs = append(rs, ri)
			}
			continue
		}
		rs = append(rs, r)
	}
	m, err := batch.Encode(batch.ID{Edge: edge, Epoch: 1, Seq: seq}, kind, false, rs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestResidency: region r1 exports raw, r2 only aggregates. Both publish raw
// readings and aggregates; the global stream and the cloud's lake hold r1's
// raw readings and aggregates and r2's aggregates, and no raw reading of r2.
func TestResidency(t *testing.T) {
	h := startHub(t, Region{Name: "r1", Export: ExportRaw}, Region{Name: "r2", Export: ExportAggregates},
		Region{Name: "r3", Export: ExportNone})
	js1 := startRegion(t, "r1", h.LeafURL())
	js2 := startRegion(t, "r2", h.LeafURL())
	e1 := schemas.EdgeID{Region: "r1", Site: "lab", Edge: "e1"}
	e2 := schemas.EdgeID{Region: "r2", Site: "plant", Edge: "e2"}
	ctx := context.Background()
	const batches = 5
	for seq := uint64(1); seq <= batches; seq++ {
		for _, p := range []struct {
			js   jetstream.JetStream
			edge schemas.EdgeID
		}{{js1, e1}, {js2, e2}} {
			for i, kind := range []string{schemas.KindRaw, schemas.KindAgg} {
				m := hubBatch(t, p.edge, kind, seq*2+uint64(i))
				if _, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	dir := t.TempDir()
	lc := lake.DefaultConfig()
	lc.Dir, lc.RollInterval, lc.RowGroupRows = dir, 200*time.Millisecond, lake.MinRowGroupRows
	w, err := lake.Open(lc, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic := ingest.DefaultConfig()
	ic.Region, ic.StreamName, ic.NATS.URL, ic.NATS.AckWait = ingest.AllRegions, "GLOBAL", h.ClientURL(), time.Second
	in, err := ingest.New(ic, w, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- in.Run(ictx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		w.Close()
	})
	// r1: 5 raw batches of 30 readings + 5 x 3 wide aggregate rows; r2: 5 x 3 aggregate rows.
	want := int64(batches*30 + batches*3 + batches*3)
	natstest.WaitFor(t, 30*time.Second, func() error {
		if got := w.Totals(); got.Rows != want || got.PendingRows != 0 {
			return fmt.Errorf("lake has %d rows (%d pending), want %d", got.Rows, got.PendingRows, want)
		}
		return nil
	})

	// The global stream never received a raw reading of r2.
	nc, err := nats.Connect(h.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hjs, _ := jetstream.New(nc)
	s, err := hjs.Stream(ctx, "GLOBAL")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("telemetry.>"))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		sub, err := schemas.ParseSubject(subj)
		if err != nil {
			t.Fatal(err)
		}
		counts[sub.Edge.Region+"."+sub.Kind] += n
	}
	if counts["r1.raw"] != batches || counts["r1.agg"] != batches || counts["r2.agg"] != batches || counts["r2.raw"] != 0 {
		t.Errorf("global stream holds %v; want 5 of r1.raw, r1.agg, r2.agg and no r2.raw", counts)
	}

	// The lake: raw only under region=r1, aggregates under both.
	var rawDirs, aggDirs []string
	for _, top := range []struct {
		dir  string
		into *[]string
	}{{lakefmt.RawDir, &rawDirs}, {lake.AggDir, &aggDirs}} {
		entries, _ := os.ReadDir(filepath.Join(dir, top.dir))
		for _, e := range entries {
			*top.into = append(*top.into, e.Name())
		}
	}
	if strings.Join(rawDirs, ",") != "region=r1" || strings.Join(aggDirs, ",") != "region=r1,region=r2" {
		t.Errorf("lake partitions: raw %v, agg %v; want raw only for r1", rawDirs, aggDirs)
	}
	type rawRow struct {
		Region string `parquet:"region"`
	}
	filepath.WalkDir(filepath.Join(dir, lakefmt.RawDir), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !lakefmt.IsDataFile(d.Name()) {
			return err
		}
		rows, err := pq.ReadFile[rawRow](p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Region != "r1" {
				t.Fatalf("raw reading of region %s in %s", r.Region, p)
			}
		}
		return nil
	})
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Enabled = true
	good.Regions = []Region{{Name: "eu", Export: ExportRaw}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for key, mutate := range map[string]func(*Config){
		"hub.regions[0].export": func(c *Config) { c.Regions = []Region{{Name: "eu", Export: "some"}} },
		"hub.regions[1].name":   func(c *Config) { c.Regions = []Region{{Name: "eu", Export: "raw"}, {Name: "eu", Export: "none"}} },
		"hub.leaf_listen":       func(c *Config) { c.LeafListen = "nowhere" },
		"hub.duplicates":        func(c *Config) { c.Duplicates = 0 },
		"hub.leaf_tls.ca_file":  func(c *Config) { c.LeafTLS = TLSConfig{CertFile: "c", KeyFile: "k", VerifyClients: true} },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: Validate = %v", key, err)
		}
	}
	srcs := Config{Regions: []Region{{"a", ExportRaw}, {"b", ExportAggregates}, {"c", ExportNone}}}.Sources()
	if len(srcs) != 2 || srcs[0].FilterSubject != "telemetry.a.>" || srcs[1].FilterSubject != "telemetry.b.*.*.agg" ||
		srcs[1].Domain != "b" || srcs[0].Name != RegionalStream {
		t.Errorf("sources = %+v %+v", srcs[0], srcs[1])
	}
}
