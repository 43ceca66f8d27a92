// Package mqtttest runs an embedded MQTT broker (mochi) on a random port for
// the tools' tests: a real broker in the test process, never a mock.
package mqtttest

import (
	"crypto/tls"
	"log/slog"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Start runs a broker that lets every client in and returns its URL. Its
// queues are raised so that a test subscriber that falls behind a fast
// publisher is never dropped from.
func Start(t testing.TB) string {
	t.Helper()
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = 1 << 16
	caps.MaximumInflight = 1<<16 - 1
	srv := mochi.New(&mochi.Options{Capabilities: caps, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	return "tcp://" + Serve(t, srv, nil)
}

// Serve adds a TCP listener on a random port of 127.0.0.1 to srv (TLS when
// tlsConf is not nil), serves, stops srv when the test ends, and returns
// the listener's address.
func Serve(t testing.TB, srv *mochi.Server, tlsConf *tls.Config) string {
	t.Helper()
	tcp := listeners.NewTCP(listeners.Config{ID: "test", Address: "127.0.0.1:0", TLSConfig: tlsConf})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeServer(srv) })
	return tcp.Address()
}

// closeServer stops srv the way the agent's embedded broker does
// (edge/internal/broker.CloseServer, which this tree cannot import):
// mochi's own Close can deadlock (mochi-mqtt/server#488) when a client
// leaves while it looks up the listener's clients.
func closeServer(srv *mochi.Server) {
	srv.Listeners.CloseAll(func(listener string) {
		for _, cl := range srv.Clients.GetAll() {
			if cl.Net.Listener == listener && !cl.Closed() {
				_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	})
	_ = srv.Close()
}
