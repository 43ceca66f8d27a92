package forward

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/schemas"
)

// TestForwardEventsExactlyOnce: buffered events, including one JetStream
// already holds from a send whose acknowledgement was lost, and events
// appended while forwarding, each reach the EVENTS stream once, on their
// kind's subject with their headers, and leave the buffer.
func TestForwardEventsExactlyOnce(t *testing.T) {
	const before, during = 20, 30
	_, js := runJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}})
	if err != nil {
		t.Fatal(err)
	}
	b := startBuffer(t, t.TempDir())
	kind := func(i int) string { return []string{"alert", "restart"}[i%2] }
	appendEvent := func(i int) {
		errc := make(chan error, 1)
		b.AppendEvent(buffer.Event{Kind: kind(i), Payload: fmt.Appendf(nil, `{"n":%d}`, i)}, func(err error) { errc <- err })
		if err := <-errc; err != nil {
			t.Fatalf("append event %d: %v", i, err)
		}
	}
	for i := range before {
		appendEvent(i)
	}
	// The first event was sent before, but its acknowledgement was lost.
	seq, first, err := b.NextEvent(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	lost := &nats.Msg{Subject: schemas.EventSubject(testEdge, first.Kind), Data: first.Payload, Header: nats.Header{}}
	lost.Header.Set(nats.MsgIdHdr, testEdge.String()+":"+strconv.FormatUint(b.Epoch(), 16)+":ev:"+strconv.FormatUint(seq, 10))
	if _, err := js.PublishMsg(ctx, lost); err != nil {
		t.Fatal(err)
	}

	runForwarder(t, DefaultConfig(), b, js)
	for i := before; i < before+during; i++ {
		appendEvent(i)
	}
	checkFor(t, 30*time.Second, func() error {
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		if n := b.Stats().Events; info.State.Msgs != before+during || n != 0 {
			return fmt.Errorf("%d events in the stream, %d in the buffer", info.State.Msgs, n)
		}
		return nil
	})
	seen := map[string]bool{}
	for s := uint64(1); s <= before+during; s++ {
		m, err := stream.GetMsg(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		var i int
		if _, err := fmt.Sscanf(string(m.Data), `{"n":%d}`, &i); err != nil {
			t.Fatalf("event payload %q: %v", m.Data, err)
		}
		if seen[string(m.Data)] {
			t.Fatalf("event %d arrived twice", i)
		}
		seen[string(m.Data)] = true
		if want := schemas.EventSubject(testEdge, kind(i)); m.Subject != want {
			t.Fatalf("event %d on %s, want %s", i, m.Subject, want)
		}
		if s == 1 {
			continue // published by the test
		}
		if k := m.Header.Get(HdrEventKind); k != kind(i) {
			t.Fatalf("event %d has kind header %q, want %q", i, k, kind(i))
		}
		if id := m.Header.Get(nats.MsgIdHdr); id == "" {
			t.Fatalf("event %d has no message id", i)
		}
	}
}
