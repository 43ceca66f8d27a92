package batch_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// withUnits returns rec with its unit column replaced: row i names
// words[idx[i]], or is null where idx[i] < 0.
func withUnits(t testing.TB, rec arrow.RecordBatch, idx []int32, words []string) arrow.RecordBatch {
	t.Helper()
	mem := memory.DefaultAllocator
	ib := array.NewInt32Builder(mem)
	defer ib.Release()
	for _, i := range idx {
		if i < 0 {
			ib.AppendNull()
		} else {
			ib.Append(i)
		}
	}
	wb := array.NewStringBuilder(mem)
	defer wb.Release()
	wb.AppendValues(words, nil)
	ia, wa := ib.NewArray(), wb.NewArray()
	defer ia.Release()
	defer wa.Release()
	unit := array.NewDictionaryArray(batch.Schema.Field(4).Type.(*arrow.DictionaryType), ia, wa)
	defer unit.Release()
	cols := append([]arrow.Array{}, rec.Columns()[:4]...)
	return array.NewRecordBatch(batch.Schema, append(cols, unit), rec.NumRows())
}

// TestWriteStreamMatchesOwnWriter checks that the long-lived writers write,
// for every record, what a writer of its own writes: the schema, every
// dictionary, the record, the end of the stream. A stream writer leaves out
// a dictionary equal to the last one it wrote, so the sequence repeats
// records and dictionaries, and includes one whose dictionaries are the
// sentinel's.
func TestWriteStreamMatchesOwnWriter(t *testing.T) {
	a := record(t, []int64{3, 1, 2}, []int32{0, 1, 0}, []string{"d1", "d2"}, []float64{1.5, 2.5, 3.5}, nil)
	defer a.Release()
	sameWords := record(t, []int64{7, 8}, []int32{1, 0}, []string{"d1", "d2"}, []float64{4, 5}, nil)
	defer sameWords.Release()
	other := record(t, []int64{9}, []int32{0}, []string{"d3"}, []float64{6}, nil)
	defer other.Release()
	units := withUnits(t, a, []int32{0, -1, 1}, []string{"C", "%"})
	defer units.Release()
	nul := withUnits(t, a, []int32{0, 0, -1}, []string{"\x00"})
	defer nul.Release()
	nulDev := record(t, []int64{5}, []int32{0}, []string{"\x00"}, []float64{7}, nil)
	defer nulDev.Release()
	empty := record(t, nil, nil, []string{"d1"}, nil, nil)
	defer empty.Release()

	seq := []struct {
		name string
		rec  arrow.RecordBatch
	}{
		{"first", a}, {"same record", a}, {"equal dictionaries", sameWords}, {"other device", other},
		{"units", units}, {"units again", units}, {"NUL unit", nul}, {"after NUL unit", a},
		{"NUL device", nulDev}, {"NUL device again", nulDev}, {"no rows", empty}, {"last", units},
	}
	for _, s := range seq {
		got, err := batch.WriteStream(s.rec)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		want := ipcStream(t, batch.Schema, s.rec)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes differ from a writer of its own (%d bytes)", s.name, len(got), len(want))
		}
		r, err := ipc.NewReader(bytes.NewReader(got))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !r.Next() || r.RecordBatch().NumRows() != s.rec.NumRows() || !array.RecordEqual(r.RecordBatch(), s.rec) {
			t.Fatalf("%s: the stream does not read back as the record (%v)", s.name, r.Err())
		}
		if r.Next() {
			t.Fatalf("%s: a second record in the stream", s.name)
		}
		r.Release()
	}
}

// TestEncodeConcurrent encodes from many goroutines at once, more than the
// writers kept idle, each starting with a writer of its own, and checks
// every message against the same readings encoded alone.
func TestEncodeConcurrent(t *testing.T) {
	all := simulatorReadings(4000)
	want := make([][]byte, 8)
	for i := range want {
		msg, err := batch.Encode(testID, schemas.KindRaw, false, all[i*500:(i+1)*500])
		if err != nil {
			t.Fatal(err)
		}
		want[i] = msg.Data
	}
	batch.DropIdleStreamWriters()
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for g := range 8 {
		wg.Go(func() {
			for j := range 20 {
				i := (g + j) % len(want)
				msg, err := batch.Encode(testID, schemas.KindRaw, false, all[i*500:(i+1)*500])
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(msg.Data, want[i]) {
					errs <- fmt.Errorf("goroutine %d, batch %d: %d bytes, want %d", g, i, len(msg.Data), len(want[i]))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestIdleWritersLetGo checks that writers are kept between batches and let
// go once unused for a while.
func TestIdleWritersLetGo(t *testing.T) {
	defer batch.SetIdleWriterTTL(200 * time.Millisecond)()
	rs := simulatorReadings(100)
	for range 3 {
		if _, err := batch.Encode(testID, schemas.KindRaw, false, rs); err != nil {
			t.Fatal(err)
		}
	}
	if n := batch.IdleStreamWriters(); n == 0 {
		t.Fatal("no writer kept after a batch")
	}
	deadline := time.Now().Add(5 * time.Second)
	for batch.IdleStreamWriters() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d writers still kept 5 s after the last batch, with a 200 ms limit", batch.IdleStreamWriters())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And the next batch still encodes.
	if _, err := batch.Encode(testID, schemas.KindRaw, false, rs); err != nil {
		t.Fatal(err)
	}
}
