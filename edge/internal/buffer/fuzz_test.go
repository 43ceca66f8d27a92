package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
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
	f.Add([]byte{1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0}) // format 1
	f.Add([]byte{chunkFormat, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0x85, 0x01})
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
			// Whatever a value decoded to, encoding it again gives it back.
			var e chunkEncoder
			e.add(1, 1, 0, r.TS, r.Value)
			hh, err := decodeChunkHeader(e.value(0))
			if err != nil {
				t.Fatal(err)
			}
			again, err := decodeChunk(hh, dict, testEdge, nil)
			if err != nil || math.Float64bits(again[0].Value) != math.Float64bits(r.Value) {
				t.Fatalf("value %v (%#x) re-encoded: %v, %v", r.Value, math.Float64bits(r.Value), again, err)
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

// TestDecimalValues: readings parsed from short decimals, as JSON payloads
// carry them, take at most 4 bytes and come back bit for bit; any other
// float still comes back exactly, in 9 bytes.
func TestDecimalValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	size := func(v float64) int { return len(appendValue(nil, v)) }
	for k := 1; k <= 7; k++ {
		for range 2000 {
			// up to 7 significant digits, k of them after the point
			s := strconv.FormatFloat(float64(rng.IntN(10_000_000)-5_000_000)/pow10[k], 'f', k, 64)
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatal(err)
			}
			if n := size(v); n > 4 {
				t.Fatalf("%s takes %d bytes", s, n)
			}
			checkValue(t, v)
		}
	}
	for _, c := range []struct {
		v    float64
		want int
	}{{21.37, 3}, {1013.2, 3}, {3.298, 3}, {45.3, 2}, {-0.5, 2}, {math.Nextafter(0.3, 1), 9}, {math.Pi, 9}, {1e-9, 9}, {math.MaxFloat64, 9}} {
		if n := size(c.v); n != c.want {
			t.Errorf("%v takes %d bytes, want %d", c.v, n, c.want)
		}
		checkValue(t, c.v)
	}
	for range 20000 {
		checkValue(t, math.Float64frombits(rng.Uint64()))
	}
}

func checkValue(t *testing.T, v float64) {
	t.Helper()
	var e chunkEncoder
	e.add(1, 1, 0, 7, v)
	h, err := decodeChunkHeader(e.value(0))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := decodeChunk(h, []string{"dev"}, testEdge, nil)
	if math.IsNaN(v) { // the encoder never sees one (Append refuses them), but it must not corrupt it
		if err != nil || !math.IsNaN(rs[0].Value) {
			t.Fatalf("NaN: %v, %v", rs, err)
		}
		return
	}
	if err != nil || math.Float64bits(rs[0].Value) != math.Float64bits(v) {
		t.Fatalf("%v (%#x): got %v, %v", v, math.Float64bits(v), rs, err)
	}
}

// TestChunkFormat1: chunks written before decimal values still read, and a
// decimal tag in one is corruption.
func TestChunkFormat1(t *testing.T) {
	// format 1, 2 readings, first/min/max ts 10/10/11, committed at 5; then
	// dev 1 met 1 unit 0 dt 0 value 3 (integer), dev 1 met 1 unit 0 dt 1
	// value 21.5 as a raw float64
	v := []byte{1, 2, 20, 20, 22, 10, 1, 1, 0, 0, 12, 1, 1, 0, 2, 1}
	v = binary.LittleEndian.AppendUint64(v, math.Float64bits(21.5))
	h, err := decodeChunkHeader(v)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := decodeChunk(h, []string{"dev"}, testEdge, nil)
	if err != nil || len(rs) != 2 || rs[0].Value != 3 || rs[1].Value != 21.5 || rs[1].TS != 11 {
		t.Fatalf("format 1 chunk: %+v, %v", rs, err)
	}
	dec := appendValue(nil, 21.37)
	bad := append([]byte{1, 1, 20, 20, 20, 10, 1, 1, 0, 0}, dec...)
	if h, err = decodeChunkHeader(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeChunk(h, []string{"dev"}, testEdge, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a decimal in a format 1 chunk: %v, want ErrCorrupt", err)
	}
	bad[0] = 2
	if h, err = decodeChunkHeader(bad); err != nil {
		t.Fatal(err)
	}
	if rs, err := decodeChunk(h, []string{"dev"}, testEdge, nil); err != nil || rs[0].Value != 21.37 {
		t.Fatalf("the same chunk as format 2: %+v, %v", rs, err)
	}
	bad[0] = 3
	if _, err := decodeChunkHeader(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("format 3: %v, want ErrCorrupt", err)
	}
}
