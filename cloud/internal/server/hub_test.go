package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/updraft-io/updraft/cloud/internal/hub"
	"github.com/updraft-io/updraft/cloud/internal/natstest"
)

// TestServerWithHub runs updraft-cloud with the embedded hub: the lake
// writer binds to the hub's global stream, so the process becomes ready and
// /api/v1/series answers, with no region connected yet.
func TestServerWithHub(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := DefaultConfig()
	cfg.Lake.Dir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Hub.Enabled = true
	cfg.Hub.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Hub.LeafListen = "127.0.0.1:0"
	cfg.Hub.StoreDir = t.TempDir()
	cfg.Hub.Regions = []hub.Region{{Name: "eu", Export: hub.ExportRaw}, {Name: "us", Export: hub.ExportAggregates}}
	s, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	natstest.WaitFor(t, 20*time.Second, func() error {
		if code := get(t, s.URL()+"/readyz", nil); code != http.StatusOK {
			return fmt.Errorf("/readyz = %d", code)
		}
		return nil
	})
	var series struct {
		Series []any `json:"series"`
	}
	if code := get(t, s.URL()+"/api/v1/series", &series); code != 200 || series.Series == nil {
		t.Errorf("/api/v1/series = %d %+v", code, series)
	}

	bad := cfg
	bad.Hub.Listen = "127.0.0.1:0"
	if err := bad.Validate(); err == nil {
		t.Error("hub.listen with port 0 accepted")
	}
}
