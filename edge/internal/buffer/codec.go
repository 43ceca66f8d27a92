package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// On-disk record formats (docs/buffer.md). Every record starts with a format
// byte so a later version can read what an earlier one wrote.
const (
	chunkFormat = 2 // 1 had no decimal values; this build reads both
	sealFormat  = 1
	deadFormat  = 1
	eventFormat = 1
	stateFormat = 2 // 1 had no event sequence
)

// maxChunkBytes bounds one chunk record: far below Badger's value threshold
// and transaction size, and small enough that recovery reads little.
const maxChunkBytes = 32 << 10

// A chunk holds the readings one group commit added to one stream:
//
//	format(1) count(uvarint) firstTS minTS maxTS committedAt(varint each)
//	count x { device metric unit (uvarint dictionary ids; unit 0 = none)
//	          ts - previous ts (varint; the first is relative to firstTS)
//	          value }
//
// A value is one uvarint tag:
//
//	even:                 an integer n, |n| < 2^52: tag = zigzag(n)<<1
//	odd, above 1:         a decimal n/10^k, k 1..7, |n| < 2^52:
//	                      tag = (zigzag(n)<<3 | k)<<1 | 1 (format 2 on)
//	1:                    followed by the 8 little-endian bytes of the float64
//
// Sensors report integers (counts, raw ADC values) and short decimals
// (21.37 from a JSON payload): those take 1 to 4 bytes instead of 9. A
// decimal is used only when float64(n)/10^k gives back the very same bits:
// IEEE division is exact to the last bit, so every build decodes it alike.
type chunkEncoder struct {
	body                          []byte
	count                         int
	firstTS, prevTS, minTS, maxTS int64
}

func (e *chunkEncoder) reset() {
	e.body = e.body[:0]
	e.count = 0
}

func (e *chunkEncoder) size() int { return len(e.body) + 40 }

func (e *chunkEncoder) add(dev, met, unit uint32, ts int64, v float64) {
	if e.count == 0 {
		e.firstTS, e.prevTS, e.minTS, e.maxTS = ts, ts, ts, ts
	}
	e.count++
	e.minTS, e.maxTS = min(e.minTS, ts), max(e.maxTS, ts)
	b := binary.AppendUvarint(e.body, uint64(dev))
	b = binary.AppendUvarint(b, uint64(met))
	b = binary.AppendUvarint(b, uint64(unit))
	b = binary.AppendVarint(b, ts-e.prevTS)
	e.prevTS = ts
	e.body = appendValue(b, v)
}

// value returns the record in a new slice: Badger keeps it until the commit.
func (e *chunkEncoder) value(committedAt int64) []byte {
	out := make([]byte, 0, len(e.body)+1+4*binary.MaxVarintLen64)
	out = append(out, chunkFormat)
	out = binary.AppendUvarint(out, uint64(e.count))
	out = binary.AppendVarint(out, e.firstTS)
	out = binary.AppendVarint(out, e.minTS)
	out = binary.AppendVarint(out, e.maxTS)
	out = binary.AppendVarint(out, committedAt)
	return append(out, e.body...)
}

const maxExactInt = 1 << 52

// pow10 are the decimal scales, all exact in a float64.
var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7}

func appendValue(b []byte, v float64) []byte {
	if i := int64(v); float64(i) == v && i > -maxExactInt && i < maxExactInt && !(v == 0 && math.Signbit(v)) {
		return binary.AppendUvarint(b, zigzag(i)<<1)
	}
	for k := 1; k < len(pow10); k++ {
		x := math.Round(v * pow10[k])
		if !(x > -maxExactInt && x < maxExactInt) { // also NaN and the infinities
			break
		}
		n := int64(x)
		if math.Float64bits(float64(n)/pow10[k]) == math.Float64bits(v) {
			return binary.AppendUvarint(b, (zigzag(n)<<3|uint64(k))<<1|1)
		}
	}
	b = append(b, 1)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

func zigzag(i int64) uint64   { return uint64(i<<1) ^ uint64(i>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// reader decodes the primitive fields of a record, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
}

func (r *reader) byte(what string) byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail(what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(what string, max int) []byte {
	n := r.uvarint(what + " length")
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) || n > uint64(max) {
		r.fail(what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) end(what string) error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes in %s", ErrCorrupt, len(r.b), what)
	}
	return r.err
}

type chunkHeader struct {
	format                    byte
	count                     int
	firstTS, minTS, maxTS, at int64
	body                      []byte
}

func decodeChunkHeader(v []byte) (chunkHeader, error) {
	r := reader{b: v}
	var h chunkHeader
	if h.format = r.byte("chunk format"); r.err == nil && (h.format < 1 || h.format > chunkFormat) {
		return chunkHeader{}, fmt.Errorf("%w: chunk format %d, this build reads 1 to %d", ErrCorrupt, h.format, chunkFormat)
	}
	n := r.uvarint("chunk count")
	h.firstTS = r.varint("chunk first ts")
	h.minTS = r.varint("chunk min ts")
	h.maxTS = r.varint("chunk max ts")
	h.at = r.varint("chunk commit time")
	if r.err != nil {
		return chunkHeader{}, r.err
	}
	// Each reading takes at least 5 bytes, which bounds count by the size.
	if n == 0 || n > uint64(len(r.b))/5 || h.minTS > h.maxTS || h.firstTS < h.minTS || h.firstTS > h.maxTS {
		return chunkHeader{}, fmt.Errorf("%w: chunk header (count %d, ts %d..%d)", ErrCorrupt, n, h.minTS, h.maxTS)
	}
	h.count = int(n)
	h.body = r.b
	return h, nil
}

// errDictMiss: a chunk names a dictionary id beyond the caller's copy of the
// dictionary, which may simply be older than the chunk.
var errDictMiss = errors.New("dictionary id not loaded")

// decodeChunk appends the chunk's readings to out. dict[i] is the string of
// id i+1.
func decodeChunk(h chunkHeader, dict []string, edge schemas.EdgeID, out []schemas.Reading) ([]schemas.Reading, error) {
	r := reader{b: h.body}
	word := func(id uint64, optional bool) (string, error) {
		switch {
		case id == 0 && optional:
			return "", nil
		case id == 0:
			return "", fmt.Errorf("%w: dictionary id 0 for a required string", ErrCorrupt)
		case id > uint64(len(dict)):
			if id > math.MaxUint32 {
				return "", fmt.Errorf("%w: dictionary id %d", ErrCorrupt, id)
			}
			return "", errDictMiss
		}
		return dict[id-1], nil
	}
	prev := h.firstTS
	start := len(out)
	for range h.count {
		dev, met, unit := r.uvarint("device id"), r.uvarint("metric id"), r.uvarint("unit id")
		ts := prev + r.varint("ts delta")
		prev = ts
		tag := r.uvarint("value")
		var v float64
		switch {
		case r.err != nil:
		case tag&1 == 0:
			v = float64(unzigzag(tag >> 1))
		case tag == 1 && len(r.b) >= 8:
			v = math.Float64frombits(binary.LittleEndian.Uint64(r.b))
			r.b = r.b[8:]
		case tag != 1 && h.format >= 2 && (tag>>1)&7 != 0 && tag>>4 < 2*maxExactInt:
			v = float64(unzigzag(tag>>4)) / pow10[(tag>>1)&7]
		default:
			r.fail("value")
		}
		if r.err != nil {
			return out[:start], r.err
		}
		if ts < h.minTS || ts > h.maxTS {
			return out[:start], fmt.Errorf("%w: reading time %d outside the chunk's %d..%d", ErrCorrupt, ts, h.minTS, h.maxTS)
		}
		d, err := word(dev, false)
		if err != nil {
			return out[:start], err
		}
		m, err := word(met, false)
		if err != nil {
			return out[:start], err
		}
		u, err := word(unit, true)
		if err != nil {
			return out[:start], err
		}
		out = append(out, schemas.Reading{Region: edge.Region, Site: edge.Site, Edge: edge.Edge,
			Device: d, Metric: m, TS: ts, Value: v, Unit: u})
	}
	if err := r.end("chunk"); err != nil {
		return out[:start], err
	}
	return out, nil
}

// sealRecord makes a batch: a stream's chunks first..last, which lie in segs.
type sealRecord struct {
	stream           uint8
	count            int
	minTS, maxTS     int64
	bornAt, sealedAt int64 // unix ns: arrival of the first reading, sealing
	bytes            int64 // encoded size of the batch's chunks
	first, last      uint64
	segs             []uint64 // ascending; the segments holding the chunks
}

const maxSealSegs = 1 << 16

func (s *sealRecord) encode() []byte {
	b := make([]byte, 0, 64+4*len(s.segs))
	b = append(b, sealFormat, s.stream)
	b = binary.AppendUvarint(b, uint64(s.count))
	b = binary.AppendVarint(b, s.minTS)
	b = binary.AppendVarint(b, s.maxTS)
	b = binary.AppendVarint(b, s.bornAt)
	b = binary.AppendVarint(b, s.sealedAt)
	b = binary.AppendUvarint(b, uint64(s.bytes))
	b = binary.AppendUvarint(b, s.first)
	b = binary.AppendUvarint(b, s.last-s.first)
	b = binary.AppendUvarint(b, uint64(len(s.segs)))
	prev := uint64(0)
	for _, seg := range s.segs {
		b = binary.AppendUvarint(b, seg-prev)
		prev = seg
	}
	return b
}

func decodeSeal(v []byte) (sealRecord, error) {
	r := reader{b: v}
	if f := r.byte("seal format"); r.err == nil && f != sealFormat {
		return sealRecord{}, fmt.Errorf("%w: seal format %d, this build reads %d", ErrCorrupt, f, sealFormat)
	}
	var s sealRecord
	s.stream = r.byte("stream")
	count := r.uvarint("count")
	s.minTS, s.maxTS = r.varint("min ts"), r.varint("max ts")
	s.bornAt, s.sealedAt = r.varint("born"), r.varint("sealed")
	bytes := r.uvarint("bytes")
	s.first = r.uvarint("first chunk")
	span := r.uvarint("chunk span")
	n := r.uvarint("segment count")
	if r.err != nil {
		return sealRecord{}, r.err
	}
	if s.stream >= numStreams || count == 0 || count > batch.MaxRows || s.minTS > s.maxTS ||
		bytes > math.MaxInt64 || s.first == 0 || span > math.MaxUint64-s.first || n == 0 || n > maxSealSegs || n > uint64(len(r.b)) {
		return sealRecord{}, fmt.Errorf("%w: seal record fields out of range", ErrCorrupt)
	}
	s.count, s.bytes, s.last = int(count), int64(bytes), s.first+span
	s.segs = make([]uint64, 0, n)
	prev := uint64(0)
	for i := range n {
		d := r.uvarint("segment")
		if r.err == nil && (d == 0 && i > 0 || d > math.MaxUint64-prev) {
			r.fail("segment order")
		}
		prev += d
		s.segs = append(s.segs, prev)
	}
	if err := r.end("seal record"); err != nil {
		return sealRecord{}, err
	}
	return s, nil
}

// DeadLetter is a message the agent could not turn into readings. It is kept
// as durably as readings and forwarded to deadletter.<region>.<site>.<edge>.
type DeadLetter struct {
	Topic      string
	Reason     string
	ReceivedAt time.Time
	// Payload is capped at MaxDeadLetterPayload bytes; Truncated says it was cut.
	Payload   []byte
	Truncated bool
}

// Caps on a dead letter's fields; longer ones are cut.
const (
	MaxDeadLetterPayload = 64 << 10
	maxDeadTopic         = 4 << 10
	maxDeadReason        = 1 << 10
)

func encodeDead(d *DeadLetter) []byte {
	b := make([]byte, 0, 32+len(d.Topic)+len(d.Reason)+len(d.Payload))
	b = append(b, deadFormat)
	b = binary.AppendUvarint(b, uint64(len(d.Topic)))
	b = append(b, d.Topic...)
	b = binary.AppendUvarint(b, uint64(len(d.Reason)))
	b = append(b, d.Reason...)
	b = binary.AppendVarint(b, d.ReceivedAt.UnixNano())
	flags := byte(0)
	if d.Truncated {
		flags = 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(d.Payload)))
	return append(b, d.Payload...)
}

func decodeDead(v []byte) (DeadLetter, error) {
	r := reader{b: v}
	if f := r.byte("dead letter format"); r.err == nil && f != deadFormat {
		return DeadLetter{}, fmt.Errorf("%w: dead letter format %d, this build reads %d", ErrCorrupt, f, deadFormat)
	}
	var d DeadLetter
	d.Topic = string(r.bytes("topic", maxDeadTopic))
	d.Reason = string(r.bytes("reason", maxDeadReason))
	d.ReceivedAt = time.Unix(0, r.varint("received at")).UTC()
	flags := r.byte("flags")
	if r.err == nil && flags > 1 {
		r.fail("flags")
	}
	d.Truncated = flags == 1
	if p := r.bytes("payload", MaxDeadLetterPayload); r.err == nil {
		d.Payload = append([]byte{}, p...)
	}
	if err := r.end("dead letter"); err != nil {
		return DeadLetter{}, err
	}
	return d, nil
}

// Event is something that happened at the edge, such as an alert, kept as
// durably as readings and forwarded to events.<region>.<site>.<edge>.<kind>.
type Event struct {
	Kind    string
	At      time.Time
	Payload []byte
}

// Caps on an event's fields: AppendEvent refuses longer ones, since a cut
// event payload (JSON) would be useless to its consumers.
const (
	MaxEventPayload = 64 << 10
	maxEventKind    = 256
)

func encodeEvent(e *Event) []byte {
	b := make([]byte, 0, 24+len(e.Kind)+len(e.Payload))
	b = append(b, eventFormat)
	b = binary.AppendUvarint(b, uint64(len(e.Kind)))
	b = append(b, e.Kind...)
	b = binary.AppendVarint(b, e.At.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(e.Payload)))
	return append(b, e.Payload...)
}

func decodeEvent(v []byte) (Event, error) {
	r := reader{b: v}
	if f := r.byte("event format"); r.err == nil && f != eventFormat {
		return Event{}, fmt.Errorf("%w: event format %d, this build reads %d", ErrCorrupt, f, eventFormat)
	}
	var e Event
	e.Kind = string(r.bytes("kind", maxEventKind))
	e.At = time.Unix(0, r.varint("event time")).UTC()
	if p := r.bytes("payload", MaxEventPayload); r.err == nil {
		e.Payload = append([]byte{}, p...)
	}
	if err := r.end("event"); err != nil {
		return Event{}, err
	}
	return e, nil
}

// state is the metadata that must survive even when every batch is gone:
// sequences are never reused within an epoch, and a chunk at or below its
// stream's sealedUpTo belongs to a sealed batch.
type state struct {
	nextSeq    uint64
	nextSide   [numSides]uint64
	sealedUpTo [numStreams]uint64
}

// Format 2 appends the next event sequence to format 1's fields.
func (s *state) encode() []byte {
	b := []byte{stateFormat}
	b = binary.AppendUvarint(b, s.nextSeq)
	b = binary.AppendUvarint(b, s.nextSide[sideDead])
	for _, w := range s.sealedUpTo {
		b = binary.AppendUvarint(b, w)
	}
	return binary.AppendUvarint(b, s.nextSide[sideEvent])
}

func decodeState(v []byte) (state, error) {
	r := reader{b: v}
	f := r.byte("state format")
	if r.err == nil && (f < 1 || f > stateFormat) {
		return state{}, fmt.Errorf("%w: state format %d, this build reads 1 to %d", ErrCorrupt, f, stateFormat)
	}
	var s state
	s.nextSeq = r.uvarint("next seq")
	s.nextSide[sideDead] = r.uvarint("next dead letter")
	for i := range s.sealedUpTo {
		s.sealedUpTo[i] = r.uvarint("sealed watermark")
	}
	if f >= 2 {
		s.nextSide[sideEvent] = r.uvarint("next event")
	}
	return s, r.end("state")
}

func encodeKeys(keys []uint64) []byte {
	b := make([]byte, 0, 8*len(keys))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint64(b, k)
	}
	return b
}

func decodeKeys(v []byte, out []uint64) ([]uint64, error) {
	if len(v)%8 != 0 {
		return out, fmt.Errorf("%w: message keys record of %d bytes", ErrCorrupt, len(v))
	}
	for i := 0; i < len(v); i += 8 {
		out = append(out, binary.BigEndian.Uint64(v[i:]))
	}
	return out, nil
}
