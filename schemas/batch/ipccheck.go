package batch

import (
	"encoding/binary"
	"fmt"
)

// Limits on the flatbuffer metadata of a batch's IPC messages. A batch's
// schema has five flat fields and no custom metadata; the margins only
// leave room for harmless additions by other Arrow writers.
const (
	maxSchemaFields  = 64
	maxKeyValuePairs = 64
)

// checkIPCMetadata walks the message framing of an Arrow IPC stream and
// checks the flatbuffer metadata before the Arrow reader sees it. arrow-go
// sizes slices from vector lengths in that metadata (schema fields, field
// children, custom metadata) without checking them against the buffer, so a
// few hundred bytes can make it allocate gigabytes, and it follows field
// children recursively without a depth limit. A batch's fields have no
// children, so any child is refused here.
//
// Reads past the end of a buffer panic; decodePayload recovers them as
// ErrPayload, so only lengths need explicit checks.
func checkIPCMetadata(data []byte) error {
	for off := 0; off < len(data); {
		n, err := u32(data, off)
		if err != nil {
			return err
		}
		off += 4
		if n == 0xFFFFFFFF { // continuation marker before the length
			if n, err = u32(data, off); err != nil {
				return err
			}
			off += 4
		}
		if n == 0 { // end of stream
			return nil
		}
		if int64(n) > int64(len(data)-off) {
			return fmt.Errorf("message metadata of %d bytes at offset %d exceeds the payload", n, off)
		}
		body, err := checkMessage(data[off : off+int(n)])
		if err != nil {
			return fmt.Errorf("message at offset %d: %w", off, err)
		}
		off += int(n)
		if body < 0 || body > int64(len(data)-off) {
			return fmt.Errorf("message body of %d bytes at offset %d exceeds the payload", body, off)
		}
		off += int(body)
	}
	return nil
}

// Slots (vtable field indexes) of the Arrow flatbuffer tables, from
// format/Message.fbs and format/Schema.fbs.
const (
	slotMessageHeaderType = 1
	slotMessageHeader     = 2
	slotMessageBodyLength = 3
	slotMessageMetadata   = 4
	slotSchemaFields      = 1
	slotSchemaMetadata    = 2
	slotFieldChildren     = 5
	slotFieldMetadata     = 6

	headerSchema = 1
)

// checkMessage checks one Message flatbuffer and returns its body length.
func checkMessage(meta []byte) (int64, error) {
	root, err := u32(meta, 0)
	if err != nil {
		return 0, err
	}
	msg := fbTable{buf: meta, pos: int(root)}
	if _, err := msg.vector(slotMessageMetadata, 4, maxKeyValuePairs, "message custom metadata"); err != nil {
		return 0, err
	}
	body := int64(0)
	if p, ok := msg.field(slotMessageBodyLength); ok {
		body = int64(binary.LittleEndian.Uint64(meta[p : p+8]))
	}
	if p, ok := msg.field(slotMessageHeaderType); !ok || meta[p] != headerSchema {
		return body, nil
	}
	schema, ok := msg.table(slotMessageHeader)
	if !ok {
		return 0, fmt.Errorf("schema message without a schema")
	}
	if _, err := schema.vector(slotSchemaMetadata, 4, maxKeyValuePairs, "schema custom metadata"); err != nil {
		return 0, err
	}
	fields, err := schema.vector(slotSchemaFields, 4, maxSchemaFields, "schema fields")
	if err != nil {
		return 0, err
	}
	for i := 0; i < fields.n; i++ {
		p := fields.start + 4*i
		f := fbTable{buf: meta, pos: p + int(binary.LittleEndian.Uint32(meta[p:p+4]))}
		if _, err := f.vector(slotFieldChildren, 4, 0, "field children"); err != nil {
			return 0, err
		}
		if _, err := f.vector(slotFieldMetadata, 4, maxKeyValuePairs, "field custom metadata"); err != nil {
			return 0, err
		}
	}
	return body, nil
}

func u32(b []byte, off int) (uint32, error) {
	if off < 0 || len(b)-off < 4 {
		return 0, fmt.Errorf("truncated at offset %d", off)
	}
	return binary.LittleEndian.Uint32(b[off:]), nil
}

// fbTable is a flatbuffer table at pos in buf.
type fbTable struct {
	buf []byte
	pos int
}

// field returns where the field in slot is stored, or false if absent.
func (t fbTable) field(slot int) (int, bool) {
	vt := t.pos - int(int32(binary.LittleEndian.Uint32(t.buf[t.pos:t.pos+4])))
	vtLen := int(binary.LittleEndian.Uint16(t.buf[vt : vt+2]))
	at := 4 + 2*slot
	if at+2 > vtLen {
		return 0, false
	}
	o := int(binary.LittleEndian.Uint16(t.buf[vt+at : vt+at+2]))
	if o == 0 {
		return 0, false
	}
	return t.pos + o, true
}

func (t fbTable) table(slot int) (fbTable, bool) {
	p, ok := t.field(slot)
	if !ok {
		return fbTable{}, false
	}
	return fbTable{buf: t.buf, pos: p + int(binary.LittleEndian.Uint32(t.buf[p:p+4]))}, true
}

type fbVector struct{ start, n int }

// vector returns the vector in slot after checking that its claimed length
// is at most limit and that its elements lie inside the buffer.
func (t fbTable) vector(slot, elemSize, limit int, what string) (fbVector, error) {
	p, ok := t.field(slot)
	if !ok {
		return fbVector{}, nil
	}
	v := p + int(binary.LittleEndian.Uint32(t.buf[p:p+4]))
	n, err := u32(t.buf, v)
	if err != nil {
		return fbVector{}, err
	}
	if int64(n) > int64(limit) {
		return fbVector{}, fmt.Errorf("%s: %d entries, at most %d allowed", what, n, limit)
	}
	if int64(n)*int64(elemSize) > int64(len(t.buf)-v-4) {
		return fbVector{}, fmt.Errorf("%s: %d entries do not fit in the metadata", what, n)
	}
	return fbVector{start: v + 4, n: int(n)}, nil
}
