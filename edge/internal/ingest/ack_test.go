package ingest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/schemas"
)

// callbackSink keeps each message with its callback, for the test to call
// when it chooses: as the buffer does once the message is durable.
type callbackSink struct {
	mu    sync.Mutex
	msgs  []buffer.Message
	dones []func(error)
}

func (s *callbackSink) AppendMessage(_ string, _ []schemas.Reading, m buffer.Message, done func(error)) {
	s.mu.Lock()
	s.msgs, s.dones = append(s.msgs, m), append(s.dones, done)
	s.mu.Unlock()
}

func (s *callbackSink) AppendDeadLetter(_ buffer.DeadLetter, done func(error)) { done(nil) }

func (s *callbackSink) taken() ([]buffer.Message, []func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]buffer.Message(nil), s.msgs...), append([]func(error){}, s.dones...)
}

// TestAcksGoOnTheirConnection: the agent writes its PUBACKs itself. Those
// written on a live connection acknowledge their messages, which the
// broker then never sends again; one made durable only after its
// connection was lost is not written on the next connection, so the broker
// sends the message again, flagged DUP, and the acknowledgement of that
// re-send completes it.
func TestAcksGoOnTheirConnection(t *testing.T) {
	cfg, edge, subs, dec := embeddedSession(t, "ingest-acks")
	cfg.ReadWait = 0 // the connection under the buffer is a *net.TCPConn, for cut
	sink := new(callbackSink)
	in, _ := runIngest(t, cfg, edge, subs, dec, sink)
	waitFor(t, "subscribed", in.Connected)

	const n, acked = 10, 6
	publishTelemetry(t, cfg.Broker, n)
	waitFor(t, "every message", func() bool { m, _ := sink.taken(); return len(m) == n })
	first, dones := sink.taken()
	for _, done := range dones[:acked] {
		done(nil)
	}
	if got := in.Stats().Acked; got != acked {
		t.Fatalf("%d messages acknowledged, want %d", got, acked)
	}
	reconnect(t, in)
	waitFor(t, "the re-sends", func() bool { m, _ := sink.taken(); return len(m) >= n+(n-acked) })

	// Durable now, after their connection was lost: not acknowledged.
	for _, done := range dones[acked:] {
		done(nil)
	}
	if got := in.Stats().Acked; got != acked {
		t.Errorf("%d messages acknowledged, want %d: an acknowledgement went on a connection its message did not come in on", got, acked)
	}
	all, dones := sink.taken()
	resent := all[n:]
	want := map[uint64]bool{}
	for _, m := range first[acked:] {
		want[m.Key] = true
	}
	for _, m := range resent {
		if !m.Dup || !want[m.Key] {
			t.Errorf("re-sent message: DUP %v, one of those not acknowledged %v", m.Dup, want[m.Key])
		}
		delete(want, m.Key)
	}
	if len(want) != 0 || len(resent) != n-acked {
		t.Fatalf("the broker re-sent %d messages, want the %d not acknowledged", len(resent), n-acked)
	}
	for _, done := range dones[n:] {
		done(nil)
	}
	if got := in.Stats().Acked; got != n {
		t.Errorf("%d messages acknowledged, want %d", got, n)
	}

	// Every message is acknowledged: a third connection gets none again.
	reconnect(t, in)
	waitFor(t, "subscribed again", in.Connected)
	time.Sleep(500 * time.Millisecond)
	if m, _ := sink.taken(); len(m) != n+(n-acked) {
		t.Errorf("the broker sent %d messages again after all were acknowledged", len(m)-(n+(n-acked)))
	}
}

// reconnect lets the PUBACKs written on in's connection reach the broker,
// cuts the connection, and waits for paho to dial the next.
func reconnect(t *testing.T, in *Ingest) {
	t.Helper()
	c := in.conn.Load()
	waitFor(t, "the PUBACKs sent", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pend) == 0
	})
	time.Sleep(100 * time.Millisecond) // for the broker to read them
	cut(t, c)
	waitFor(t, "a new connection", func() bool { return in.conn.Load() != c })
}

// cut shuts the TCP connection down under paho, as a failing network does:
// its read ends, and it reconnects. (Closing it would not do: paho takes a
// read on a closed connection for its own disconnect, and waits.)
func cut(t *testing.T, c *bufferedConn) {
	t.Helper()
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		t.Fatalf("connection is a %T, not a *net.TCPConn", c.Conn)
	}
	if err := tc.CloseRead(); err != nil {
		t.Fatal(err)
	}
	_ = tc.CloseWrite() // paho may have closed it already, having read EOF
}
