package ingest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	pq "github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/updraft-io/updraft/cloud/internal/lake"
	"github.com/updraft-io/updraft/cloud/internal/natstest"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

type aggLakeRow struct {
	TS     time.Time `parquet:"ts,timestamp(nanosecond)"`
	Window string    `parquet:"window"`
	Device string    `parquet:"device"`
	Metric string    `parquet:"metric"`
	Count  *int64    `parquet:"count,optional"`
	Mean   *float64  `parquet:"mean,optional"`
	Max    *float64  `parquet:"max,optional"`
}

// aggReadings returns the aggregate readings of batch seq: count, mean and
// max of "temp" over windows 1m windows from start, for 2 devices.
func aggReadings(edge schemas.EdgeID, start time.Time, seq uint64, windows int) []schemas.Reading {
	base := start.Add(time.Duration(seq*uint64(windows)) * time.Minute)
	var out []schemas.Reading
	for w := range windows {
		for d := range 2 {
			ts := base.Add(time.Duration(w) * time.Minute).UnixNano()
			dev := fmt.Sprintf("dev-%d", d)
			v := float64(seq*1000) + float64(w*10+d)
			out = append(out,
				schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge, Device: dev, Metric: "temp:count:1m", TS: ts, Value: 60},
				schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge, Device: dev, Metric: "temp:mean:1m", TS: ts, Value: v, Unit: "C"},
				schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge, Device: dev, Metric: "temp:max:1m", TS: ts, Value: v + 0.5, Unit: "C"},
			)
		}
	}
	return out
}

// TestAggregatesLandInAggLake publishes raw and aggregate batches: raw
// readings go to raw/, aggregates become wide rows under agg/, each once,
// and an aggregate batch with a malformed name is quarantined.
func TestAggregatesLandInAggLake(t *testing.T) {
	srv := natstest.Start(t, "")
	_, js := natstest.Connect(t, srv)
	natstest.CreateTelemetry(t, js, "local", 10*time.Minute)
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	r := start(t, ingestConfig(srv.ClientURL()), lakeConfig(dir), reg)

	const windows, per = 5, 100
	// One start for publishing and checking: read again, the clock may have
	// passed a minute and moved every window.
	from := time.Now().Add(-time.Hour).Truncate(time.Minute)
	for seq := uint64(1); seq <= 4; seq++ {
		publish(t, js, encode(t, edge1, 1, seq, per))
		m, err := batch.Encode(batch.ID{Edge: edge1, Epoch: 2, Seq: seq}, schemas.KindAgg, false, aggReadings(edge1, from, seq, windows))
		if err != nil {
			t.Fatal(err)
		}
		publish(t, js, m)
	}
	bad := aggReadings(edge1, from, 9, 1)
	bad[0].Metric = "temp"
	m, err := batch.Encode(batch.ID{Edge: edge1, Epoch: 2, Seq: 9}, schemas.KindAgg, false, bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}); err != nil {
		t.Fatal(err)
	}
	// 4 raw batches of 100 readings + 4 aggregate batches of 5 windows x 2 devices.
	waitRows(t, r.w, 4*per+4*windows*2)
	waitAcked(t, js)
	if got := testutil.ToFloat64(r.in.m.rejected.WithLabelValues("aggregate")); got != 1 {
		t.Errorf("rejected{reason=aggregate} = %v, want 1", got)
	}
	checkExactlyOnce(t, dir, per, map[schemas.EdgeID]uint64{edge1: 4})

	got := map[string]aggLakeRow{}
	err = filepath.WalkDir(filepath.Join(dir, lake.AggDir), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !lakefmt.IsDataFile(d.Name()) {
			return err
		}
		rows, err := pq.ReadFile[aggLakeRow](p)
		for _, row := range rows {
			k := fmt.Sprintf("%s/%d", row.Device, row.TS.UnixNano())
			if _, dup := got[k]; dup {
				t.Errorf("aggregate row %s twice", k)
			}
			got[k] = row
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4*windows*2 {
		t.Fatalf("agg lake holds %d rows, want %d", len(got), 4*windows*2)
	}
	for seq := uint64(1); seq <= 4; seq++ {
		rs := aggReadings(edge1, from, seq, windows)
		for i := 0; i < len(rs); i += 3 {
			row := got[fmt.Sprintf("%s/%d", rs[i].Device, rs[i].TS)]
			if row.Metric != "temp" || row.Window != "1m" || row.Count == nil || *row.Count != 60 ||
				row.Mean == nil || *row.Mean != rs[i+1].Value || row.Max == nil || *row.Max != rs[i+2].Value {
				t.Errorf("row for %+v = %+v", rs[i], row)
			}
		}
	}
}
