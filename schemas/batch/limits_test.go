package batch

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

func encodeOne(t *testing.T) *Message {
	t.Helper()
	edge := schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}
	rs := make([]schemas.Reading, 20)
	for i := range rs {
		rs[i] = schemas.Reading{Region: "local", Site: "lab", Edge: "edge-1", Device: "d1", Metric: "temperature",
			TS: time.Date(2024, 4, 5, 11, 0, i, 0, time.UTC).UnixNano(), Value: float64(i), Unit: "Cel"}
	}
	msg, err := Encode(ID{Edge: edge, Epoch: 1, Seq: 1}, schemas.KindRaw, false, rs)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// ipcMessage is one message of an IPC stream: where its flatbuffer metadata
// and its body are in the stream.
type ipcMessage struct {
	meta, body int
	metaLen    int
	table      fbTable
	headerType byte
}

func ipcMessages(t *testing.T, data []byte) []ipcMessage {
	t.Helper()
	var out []ipcMessage
	for off := 0; off < len(data); {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		if n == 0xFFFFFFFF {
			n = int(binary.LittleEndian.Uint32(data[off:]))
			off += 4
		}
		if n == 0 {
			break
		}
		meta := data[off : off+n]
		root := fbTable{buf: meta, pos: int(binary.LittleEndian.Uint32(meta))}
		m := ipcMessage{meta: off, metaLen: n, body: off + n, table: root}
		if p, ok := root.field(slotMessageHeaderType); ok {
			m.headerType = meta[p]
		}
		body := int64(0)
		if p, ok := root.field(slotMessageBodyLength); ok {
			body = int64(binary.LittleEndian.Uint64(meta[p:]))
		}
		out = append(out, m)
		off += n + int(body)
	}
	return out
}

// allocated reports how many bytes f allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// Without checkIPCMetadata both payloads kill the process with a fatal
// error that recover cannot catch: a fields vector claiming two billion
// entries makes arrow-go allocate beyond memory ("out of memory"), and a
// field whose children point back at the schema's fields makes it recurse
// until the stack overflows.
func TestDecodeRefusesHugeSchemaVectors(t *testing.T) {
	msg := encodeOne(t)
	msgs := ipcMessages(t, msg.Data)
	if msgs[0].headerType != headerSchema {
		t.Fatalf("first message has header type %d, want a schema", msgs[0].headerType)
	}
	schema, ok := msgs[0].table.table(slotMessageHeader)
	if !ok {
		t.Fatal("no schema table")
	}
	fields, err := schema.vector(slotSchemaFields, 4, maxSchemaFields, "fields")
	if err != nil || fields.n != len(Schema.Fields()) {
		t.Fatalf("fields vector: %+v, %v", fields, err)
	}
	tests := []struct {
		name  string
		patch func(data []byte)
	}{
		{"fields length", func(data []byte) {
			binary.LittleEndian.PutUint32(data[msgs[0].meta+fields.start-4:], 0x7fffffff)
		}},
		{"field children length", func(data []byte) {
			// Point field 0's children at the fields vector itself, so field
			// 0 is its own child. The offset wraps around 32 bits, as
			// flatbuffer offsets do in arrow-go.
			p := fields.start
			f := fbTable{buf: data[msgs[0].meta : msgs[0].meta+msgs[0].metaLen], pos: p + int(binary.LittleEndian.Uint32(data[msgs[0].meta+p:]))}
			slot, ok := f.field(slotFieldChildren)
			if !ok {
				t.Fatal("the encoded schema no longer stores a children vector for field 0: this regression case needs a new way to build its input")
			}
			binary.LittleEndian.PutUint32(data[msgs[0].meta+slot:], uint32(fields.start-4-slot))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := append([]byte(nil), msg.Data...)
			tt.patch(data)
			var err error
			grew := allocated(func() { _, err = Decode(msg.Subject, msg.Header, data) })
			if !errors.Is(err, ErrPayload) {
				t.Fatalf("Decode = %v, want ErrPayload", err)
			}
			t.Log(err)
			if grew > 16<<20 {
				t.Errorf("Decode of %d bytes allocated %d bytes", len(data), grew)
			}
		})
	}
}

// A compressed buffer claiming a terabyte once decompressed hits the
// decoder's allocation limit, which arrow-go reports wrapped in its own
// error.
func TestDecodeAllocationLimit(t *testing.T) {
	msg := encodeOne(t)
	var rec *ipcMessage
	msgs := ipcMessages(t, msg.Data)
	for i := range msgs {
		if msgs[i].headerType == 3 { // RecordBatch
			rec = &msgs[i]
		}
	}
	if rec == nil {
		t.Fatal("no record batch message")
	}
	batch, ok := rec.table.table(slotMessageHeader)
	if !ok {
		t.Fatal("no record batch table")
	}
	// RecordBatch.buffers (slot 2) holds {offset, length int64} structs;
	// with compression each buffer starts with its decompressed length.
	buffers, err := batch.vector(2, 16, 64, "buffers")
	if err != nil {
		t.Fatal(err)
	}
	data := append([]byte(nil), msg.Data...)
	patched := false
	for i := 0; i < buffers.n; i++ {
		p := rec.meta + buffers.start + 16*i
		off, length := binary.LittleEndian.Uint64(data[p:]), binary.LittleEndian.Uint64(data[p+8:])
		if length >= 8 {
			binary.LittleEndian.PutUint64(data[rec.body+int(off):], 1<<40)
			patched = true
			break
		}
	}
	if !patched {
		t.Fatal("no buffer to patch")
	}
	_, err = Decode(msg.Subject, msg.Header, data)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decode = %v, want ErrTooLarge", err)
	}
}
