package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/schemas"
)

// startHubServer runs a plain NATS server with JetStream (domain "hub") and
// a leaf node listener, standing in for the cloud hub.
func startHubServer(t *testing.T) (*server.Server, string) {
	t.Helper()
	opts := &server.Options{ServerName: "hub", Host: "127.0.0.1", Port: -1, JetStream: true, JetStreamDomain: "hub",
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	opts.LeafNode.Host, opts.LeafNode.Port = "127.0.0.1", -1
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("hub not ready")
	}
	v, err := s.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, fmt.Sprintf("nats-leaf://127.0.0.1:%d", v.LeafNode.Port)
}

// TestLeafExportAggregates links a gateway to a hub with leaf.export
// aggregates: a subscriber at the hub receives the region's aggregates and
// never its raw readings, and the hub can reach the region's JetStream by
// domain (which stream sourcing needs).
func TestLeafExportAggregates(t *testing.T) {
	hub, leafURL := startHubServer(t)
	cfg := testConfig(t)
	cfg.Leaf = LeafConfig{URL: leafURL, Export: "aggregates"}
	g := start(t, cfg)
	waitFor(t, 10*time.Second, func() error {
		if hub.NumLeafNodes() != 1 {
			return fmt.Errorf("%d leaf nodes at the hub", hub.NumLeafNodes())
		}
		return nil
	})
	hc, err := nats.Connect(hub.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	got := make(chan *nats.Msg, 64)
	sub, err := hc.Subscribe("telemetry.>", func(m *nats.Msg) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	hc.Flush()

	_, js := connect(t, g.ClientURL())
	edge := schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}
	ctx := context.Background()
	// Interest crosses the link asynchronously: publish aggregates until one
	// arrives, then a raw batch and one more aggregate as a marker.
	waitFor(t, 10*time.Second, func() error {
		if _, err := js.Publish(ctx, schemas.AggSubject(edge), []byte("agg")); err != nil {
			return err
		}
		select {
		case m := <-got:
			if m.Subject != schemas.AggSubject(edge) {
				return fmt.Errorf("hub received %s", m.Subject)
			}
			return nil
		case <-time.After(100 * time.Millisecond):
			return fmt.Errorf("no aggregate at the hub yet")
		}
	})
	if _, err := js.Publish(ctx, schemas.RawSubject(edge), []byte("raw")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, schemas.AggSubject(edge), []byte("marker")); err != nil {
		t.Fatal(err)
	}
	// Messages cross the link in order: once the marker is in, the raw
	// batch published before it would have been too.
	for marker := false; !marker; {
		select {
		case m := <-got:
			if m.Subject != schemas.AggSubject(edge) {
				t.Fatalf("a %s message crossed the leaf link", m.Subject)
			}
			marker = string(m.Data) == "marker"
		case <-time.After(5 * time.Second):
			t.Fatal("marker not received")
		}
	}
	// The hub reaches the region's JetStream API by its domain.
	hjs, err := jetstream.NewWithDomain(hc, "local")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := hjs.Stream(sctx, "TELEMETRY")
	if err != nil {
		t.Fatalf("TELEMETRY of domain local from the hub: %v", err)
	}
	if n := s.CachedInfo().State.Msgs; n < 3 {
		t.Errorf("TELEMETRY holds %d messages", n)
	}
}
