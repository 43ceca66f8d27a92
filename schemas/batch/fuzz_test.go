package batch_test

import (
	"runtime"
	"slices"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// FuzzDecode feeds Decode arbitrary payloads under headers whose row count
// and time range are fuzzed too, so inputs get past the header checks. It
// must never panic, must return only *DecodeError, must not allocate beyond
// its documented limits, and whatever it accepts must be valid.
func FuzzDecode(f *testing.F) {
	seed := func(rs []schemas.Reading) {
		msg, err := batch.Encode(testID, schemas.KindRaw, false, rs)
		if err != nil {
			f.Fatal(err)
		}
		lo, _ := strconv.ParseInt(msg.Header.Get(batch.HdrMinTS), 10, 64)
		hi, _ := strconv.ParseInt(msg.Header.Get(batch.HdrMaxTS), 10, 64)
		n := uint32(len(rs))
		f.Add(msg.Data, n, lo, hi)
		// Mutations: truncated, a flipped byte in the body, a flipped byte in
		// the schema, and a zeroed tail.
		f.Add(msg.Data[:len(msg.Data)*2/3], n, lo, hi)
		for _, at := range []int{len(msg.Data) / 2, 40, len(msg.Data) - 20} {
			b := append([]byte(nil), msg.Data...)
			b[at] ^= 0x5a
			f.Add(b, n, lo, hi)
		}
		z := append([]byte(nil), msg.Data...)
		clear(z[len(z)/2:])
		f.Add(z, n, lo, hi)
	}
	seed(simulatorReadings(1))
	seed(simulatorReadings(7))
	seed(simulatorReadings(300))
	noUnit := simulatorReadings(4)
	noUnit[1].Unit = ""
	seed(noUnit)
	f.Add([]byte{}, uint32(1), int64(1), int64(1))
	f.Add([]byte("\xff\xff\xff\xff\x00\x00\x00\x00"), uint32(1), int64(1), int64(1))

	base, err := batch.Encode(testID, schemas.KindRaw, false, simulatorReadings(1))
	if err != nil {
		f.Fatal(err)
	}
	// Bound on what one Decode may allocate: the decoded Arrow buffers are
	// capped by the decoder's allocator (512 MiB) and the readings slice by
	// MaxRows.
	const allocBound = 512<<20 + batch.MaxRows*160 + 64<<20
	f.Fuzz(func(t *testing.T, data []byte, count uint32, lo, hi int64) {
		h := nats.Header{}
		for k, v := range base.Header {
			h[k] = append([]string(nil), v...)
		}
		h.Set(batch.HdrCount, strconv.FormatUint(uint64(count), 10))
		h.Set(batch.HdrMinTS, strconv.FormatInt(lo, 10))
		h.Set(batch.HdrMaxTS, strconv.FormatInt(hi, 10))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b, err := batch.Decode(base.Subject, h, data)
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > allocBound {
			t.Fatalf("Decode of %d bytes allocated %d bytes", len(data), grew)
		}
		if err != nil {
			if _, ok := err.(*batch.DecodeError); !ok {
				t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
			}
			return
		}
		if len(b.Readings) != int(count) {
			t.Fatalf("accepted %d readings under a count of %d", len(b.Readings), count)
		}
		for i, r := range b.Readings {
			if err := r.Validate(); err != nil {
				t.Fatalf("accepted invalid reading %d: %v", i, err)
			}
			if r.TS < lo || r.TS > hi {
				t.Fatalf("reading %d at %d outside the header range [%d,%d]", i, r.TS, lo, hi)
			}
		}
	})
}

// FuzzDecodeColumns checks that DecodeColumns accepts exactly what Decode
// accepts, with the same error, and decodes the same readings.
func FuzzDecodeColumns(f *testing.F) {
	for _, n := range []int{1, 7, 300} {
		msg, err := batch.Encode(testID, schemas.KindRaw, false, simulatorReadings(n))
		if err != nil {
			f.Fatal(err)
		}
		lo, _ := strconv.ParseInt(msg.Header.Get(batch.HdrMinTS), 10, 64)
		hi, _ := strconv.ParseInt(msg.Header.Get(batch.HdrMaxTS), 10, 64)
		f.Add(msg.Data, uint32(n), lo, hi)
		b := append([]byte(nil), msg.Data...)
		b[len(b)/2] ^= 0x5a
		f.Add(b, uint32(n), lo, hi)
	}
	noUnit := simulatorReadings(4)
	noUnit[1].Unit = ""
	bad := simulatorReadings(5)
	bad[3].Device = "has space"
	for _, rs := range [][]schemas.Reading{noUnit, bad} {
		msg, err := batch.Encode(testID, schemas.KindRaw, false, rs)
		if err != nil {
			f.Fatal(err)
		}
		lo, _ := strconv.ParseInt(msg.Header.Get(batch.HdrMinTS), 10, 64)
		hi, _ := strconv.ParseInt(msg.Header.Get(batch.HdrMaxTS), 10, 64)
		f.Add(msg.Data, uint32(len(rs)), lo, hi)
	}
	base, err := batch.Encode(testID, schemas.KindRaw, false, simulatorReadings(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, count uint32, lo, hi int64) {
		h := nats.Header{}
		for k, v := range base.Header {
			h[k] = append([]string(nil), v...)
		}
		h.Set(batch.HdrCount, strconv.FormatUint(uint64(count), 10))
		h.Set(batch.HdrMinTS, strconv.FormatInt(lo, 10))
		h.Set(batch.HdrMaxTS, strconv.FormatInt(hi, 10))
		want, werr := batch.Decode(base.Subject, h, data)
		got, gerr := batch.DecodeColumns(base.Subject, h, data)
		if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
			t.Fatalf("DecodeColumns error %v, Decode error %v", gerr, werr)
		}
		if werr != nil {
			return
		}
		if got.ID != want.ID || got.Kind != want.Kind || got.MinTS != want.MinTS || got.MaxTS != want.MaxTS ||
			got.Replay != want.Replay || got.Len() != len(want.Readings) {
			t.Fatalf("DecodeColumns header fields differ from Decode's")
		}
		for i, r := range want.Readings {
			if g := got.Reading(i); g != r {
				t.Fatalf("row %d: %+v, want %+v", i, g, r)
			}
		}
		if !slices.Equal(batch.ColumnsOf(want).Batch().Readings, want.Readings) {
			t.Fatal("ColumnsOf then Batch does not give the readings back")
		}
	})
}
