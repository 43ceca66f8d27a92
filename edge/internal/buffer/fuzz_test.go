package buffer

import (
	"bytes"
	"testing"
	"time"
)

// The decoders read what the buffer wrote, but a disk can corrupt anything:
// no input may panic, and what decodes must encode back to the same bytes.

func chunkSeed(rs []int) []byte {
	var e chunkEncoder
	for _, i := range rs {
		r := reading(i)
		e.add(uint32(i%7+1), uint32(i%3+1), uint32(i%2), r.TS, r.Value)
	}
	return e.value(1_700_000_000_000_000_000)
}

func FuzzDecodeChunk(f *testing.F) {
	f.Add(chunkSeed([]int{0}))
	f.Add(chunkSeed([]int{1, 2, 3, 55, 11, 10}))
	f.Add([]byte{chunkFormat, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0})
	f.Add([]byte{})
	dict := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	f.Fuzz(func(t *testing.T, v []byte) {
		h, err := decodeChunkHeader(v)
		if err != nil {
			return
		}
		rs, err := decodeChunk(h, dict, testEdge, nil)
		if err != nil {
			return
		}
		if len(rs) != h.count {
			t.Fatalf("%d readings, header says %d", len(rs), h.count)
		}
		for _, r := range rs {
			if r.TS < h.minTS || r.TS > h.maxTS {
				t.Fatalf("reading at %d outside %d..%d", r.TS, h.minTS, h.maxTS)
			}
		}
	})
}

func FuzzDecodeSeal(f *testing.F) {
	f.Add((&sealRecord{stream: 0, count: 100, minTS: 1, maxTS: 9, bornAt: 5, sealedAt: 6, bytes: 1400, first: 3, last: 9, segs: []uint64{1, 2}}).encode())
	f.Add((&sealRecord{stream: 2, count: 1, first: 1, last: 1, segs: []uint64{7}}).encode())
	f.Add([]byte{sealFormat})
	f.Fuzz(func(t *testing.T, v []byte) {
		s, err := decodeSeal(v)
		if err != nil {
			return
		}
		if s.last < s.first || len(s.segs) == 0 || s.count == 0 {
			t.Fatalf("invalid record accepted: %+v", s)
		}
		if again, err := decodeSeal(s.encode()); err != nil || again.count != s.count || again.last != s.last || len(again.segs) != len(s.segs) {
			t.Fatalf("re-encoding %+v: %+v, %v", s, again, err)
		}
	})
}

func FuzzDecodeDeadLetter(f *testing.F) {
	f.Add(encodeDead(&DeadLetter{Topic: "a/b", Reason: "bad json", ReceivedAt: time.Unix(1, 2), Payload: []byte("{")}))
	f.Add(encodeDead(&DeadLetter{Topic: "t", Truncated: true, Payload: make([]byte, 300)}))
	f.Add([]byte{deadFormat, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, v []byte) {
		d, err := decodeDead(v)
		if err != nil {
			return
		}
		if len(d.Payload) > MaxDeadLetterPayload {
			t.Fatalf("payload of %d bytes accepted", len(d.Payload))
		}
		again, err := decodeDead(encodeDead(&d))
		if err != nil || again.Topic != d.Topic || !bytes.Equal(again.Payload, d.Payload) || again.Truncated != d.Truncated {
			t.Fatalf("re-encoding: %+v, %v", again, err)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(encodeEvent(&Event{Kind: "alert", At: time.Unix(1, 2), Payload: []byte(`{"rule":"hot"}`)}))
	f.Add(encodeEvent(&Event{Kind: "restart"}))
	f.Add([]byte{eventFormat, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, v []byte) {
		e, err := decodeEvent(v)
		if err != nil {
			return
		}
		if len(e.Payload) > MaxEventPayload || len(e.Kind) > maxEventKind {
			t.Fatalf("event of kind %d bytes, payload %d bytes accepted", len(e.Kind), len(e.Payload))
		}
		again, err := decodeEvent(encodeEvent(&e))
		if err != nil || again.Kind != e.Kind || !again.At.Equal(e.At) || !bytes.Equal(again.Payload, e.Payload) {
			t.Fatalf("re-encoding: %+v, %v", again, err)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	f.Add((&state{nextSeq: 9, nextSide: [numSides]uint64{3, 5}, sealedUpTo: [numStreams]uint64{4, 0, 7}}).encode())
	f.Add([]byte{stateFormat, 1})
	f.Add([]byte{1, 9, 3, 4, 0, 7}) // format 1: no event sequence
	f.Fuzz(func(t *testing.T, v []byte) {
		s, err := decodeState(v)
		if err != nil {
			return
		}
		if !bytes.Equal(s.encode(), v) {
			// Varints have one canonical form only if minimal; accept
			// non-minimal input but it must decode to the same state.
			if again, err := decodeState(s.encode()); err != nil || again != s {
				t.Fatalf("re-encoding %+v: %+v, %v", s, again, err)
			}
		}
	})
}

func FuzzDecodeKeys(f *testing.F) {
	f.Add(encodeKeys([]uint64{1, 2, 3}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, v []byte) {
		keys, err := decodeKeys(v, nil)
		if err == nil && !bytes.Equal(encodeKeys(keys), v) {
			t.Fatal("keys do not round-trip")
		}
	})
}

// TestChunkRoundTrip covers the value encodings exactly, including -0 and
// integers at the edge of the exact range.
func TestChunkRoundTrip(t *testing.T) {
	vals := []float64{0, 1, -1, 21.5, -0.0001, 1 << 51, -(1 << 51), 1<<52 + 1, 1e300, -1e-300}
	negZero := 0.0
	negZero = -negZero
	vals = append(vals, negZero)
	var e chunkEncoder
	for i, v := range vals {
		e.add(1, 2, uint32(i%2), int64(1000+i*7-i*i), v)
	}
	h, err := decodeChunkHeader(e.value(42))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := decodeChunk(h, []string{"dev", "temp"}, testEdge, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r.Value != vals[i] || (r.Value == 0 && (1/r.Value) != (1/vals[i])) {
			t.Fatalf("value %d: %v, want %v", i, r.Value, vals[i])
		}
		if want := int64(1000 + i*7 - i*i); r.TS != want {
			t.Fatalf("ts %d: %d, want %d", i, r.TS, want)
		}
	}
	if h.at != 42 || h.count != len(vals) {
		t.Fatalf("header %+v", h)
	}
}
