// Package natstest runs a real NATS server with JetStream inside a test
// process and creates the regional streams the way the gateway does, so
// cloud tests exercise the same server code as production.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/schemas"
)

// StreamTelemetry is the regional telemetry stream's name.
const StreamTelemetry = "TELEMETRY"

// Start runs a JetStream server on a random loopback port with its store in
// a temporary directory and shuts it down when the test ends. domain may be "".
func Start(t testing.TB, domain string) *server.Server {
	t.Helper()
	return StartAt(t, domain, -1, t.TempDir())
}

// StartAt is Start on a given port and store directory, so a test can stop a
// server and start it again where it was.
func StartAt(t testing.TB, domain string, port int, storeDir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, JetStreamDomain: domain, StoreDir: storeDir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready after 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect returns a client connection and JetStream context, closed when the
// test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// CreateTelemetry creates the region's TELEMETRY stream as the gateway does,
// with the given duplicate window.
func CreateTelemetry(t testing.TB, js jetstream.JetStream, region string, duplicates time.Duration) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       StreamTelemetry,
		Subjects:   []string{schemas.RegionTelemetryFilter(region)},
		Storage:    jetstream.FileStorage,
		Duplicates: duplicates,
	})
	if err != nil {
		t.Fatalf("create stream %s: %v", StreamTelemetry, err)
	}
	return s
}

// WaitFor polls cond every 10ms until it returns nil or timeout passes,
// then fails the test with cond's last error.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
