package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/schemas/batch"
)

// freePorts reserves n distinct TCP ports on 127.0.0.1. Cluster routes must
// be known before the servers start, so a port 0 cannot be used.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// clusterConfigs returns the configurations of an n-node cluster of region
// "local" with every stream replicated 3 times.
func clusterConfigs(t *testing.T, n int) []Config {
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var out []Config
	for i := range n {
		c := testConfig(t)
		c.NATS.Monitor = ""
		c.ServerName = fmt.Sprintf("gw-local-%d", i+1)
		c.Cluster = ClusterConfig{Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes}
		c.Streams.Telemetry.Replicas = 3
		c.Streams.Events.Replicas = 3
		c.Streams.DeadLetter.Replicas = 3
		out = append(out, c)
	}
	return out
}

// startCluster starts every node at once (each waits for a quorum before
// it is ready) and waits until all are ready.
func startCluster(t *testing.T, cfgs []Config) []running {
	t.Helper()
	nodes := make([]running, len(cfgs))
	for i, c := range cfgs {
		nodes[i] = startAsync(t, c)
	}
	for i, n := range nodes {
		if n.Gateway == nil {
			t.Fatalf("node %d did not start", i+1)
		}
		select {
		case <-n.Ready():
		case <-time.After(60 * time.Second):
			t.Fatalf("node %s not ready after 60s", cfgs[i].ServerName)
		}
	}
	return nodes
}

// startAsync is start without waiting for readiness.
func startAsync(t *testing.T, cfg Config) running {
	g, err := New(cfg, testLogger(t))
	if err != nil {
		t.Error(err)
		return running{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("run %s: %v", cfg.ServerName, err)
		}
	})
	return running{Gateway: g, stop: stop}
}

func TestClusterConfigValidate(t *testing.T) {
	base := clusterConfigs(t, 3)[0]
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key    string
		mutate func(*Config)
	}{
		{"server_name", func(c *Config) { c.ServerName = "" }},
		{"cluster.routes[1]", func(c *Config) { c.Cluster.Routes[1] = "127.0.0.1:6222" }},
		{"cluster.listen", func(c *Config) { c.Cluster.Listen = "nowhere" }},
		{"cluster.listen", func(c *Config) { c.Cluster.Listen = "" }},
		{"streams.telemetry.replicas", func(c *Config) { c.Streams.Telemetry.Replicas = 4 }},
		{"streams.events.replicas", func(c *Config) { c.Cluster = ClusterConfig{}; c.Streams.Telemetry.Replicas = 1 }},
	} {
		c := base
		c.Cluster.Routes = append([]string(nil), base.Cluster.Routes...)
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: Validate = %v, want an error naming it", tc.key, err)
		}
	}
}

// TestClusterSurvivesLeaderLoss runs a region as 3 gateways with TELEMETRY
// replicated 3 times, publishes batches the way an edge does (retrying each
// with the same Nats-Msg-Id until acknowledged), and stops the stream's
// leader half way. Every batch must be in the stream exactly once.
func TestClusterSurvivesLeaderLoss(t *testing.T) {
	nodes := startCluster(t, clusterConfigs(t, 3))
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, "local")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("TELEMETRY is not replicated on 3 nodes: replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}

	const batches, per = 300, 50
	var acked atomic.Int64
	retries := atomic.Int64{}
	pubErr := make(chan error, 1)
	go func() {
		for seq := uint64(1); seq <= batches; seq++ {
			m := testBatch(t, seq, per)
			deadline := time.Now().Add(30 * time.Second)
			for {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := publish(pctx, js, m)
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					pubErr <- fmt.Errorf("batch %d not acknowledged in 30s: %w", seq, err)
					return
				}
				retries.Add(1)
				<-time.After(20 * time.Millisecond) // back off between retries, as the edge does
			}
			acked.Add(1)
		}
		pubErr <- nil
	}()

	waitFor(t, 30*time.Second, func() error {
		if n := acked.Load(); n < batches/3 {
			return fmt.Errorf("%d batches acknowledged", n)
		}
		return nil
	})
	si, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := si.Cluster.Leader
	var stopped bool
	for _, n := range nodes {
		if n.cfg.ServerName == leader {
			if err := n.stop(); err != nil {
				t.Fatalf("stop leader %s: %v", leader, err)
			}
			stopped = true
		}
	}
	if !stopped {
		t.Fatalf("leader %q is not one of the nodes", leader)
	}
	t.Logf("stopped TELEMETRY leader %s after %d batches", leader, acked.Load())
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}

	si, err = s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if si.Cluster.Leader == leader || si.Cluster.Leader == "" {
		t.Errorf("leader after the loss = %q", si.Cluster.Leader)
	}
	if si.State.Msgs != batches {
		t.Errorf("stream holds %d messages after %d batches (%d publish retries), want exactly %d",
			si.State.Msgs, batches, retries.Load(), batches)
	}
	// Every batch once: read the stream back and count message ids.
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for len(seen) < batches {
		mb, err := cons.Fetch(batches, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range mb.Messages() {
			n++
			seen[msg.Headers().Get(batch.HdrMsgID)]++
			b, err := batch.Decode(msg.Subject(), msg.Headers(), msg.Data())
			if err != nil || len(b.Readings) != per {
				t.Fatalf("message %s: %v", msg.Headers().Get(batch.HdrMsgID), err)
			}
		}
		if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	for seq := uint64(1); seq <= batches; seq++ {
		id := testBatch(t, seq, 1).Header.Get(batch.HdrMsgID)
		if seen[id] != 1 {
			t.Errorf("batch %s is in the stream %d times", id, seen[id])
		}
	}
	t.Logf("%d batches, %d publish retries, new leader %s", batches, retries.Load(), si.Cluster.Leader)
}

// waitFor polls cond every 10ms until it returns nil or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		<-time.After(10 * time.Millisecond)
	}
}
