package buffer

import "encoding/binary"

// Key layout (docs/buffer.md). Every key starts with an 8-byte big-endian
// segment number, so one DropPrefix removes everything a segment held,
// tombstones included. Segment 0 holds the few metadata keys and is never
// dropped.
//
//	<seg>c<stream><chunk>  a group commit's readings of one stream (chunk numbers are global and increasing)
//	<seg>d<id>             the segment's string dictionary (id: 4 bytes, from 1)
//	<seg>e<seq>            an event
//	<seg>k<n>              MQTT message keys of one group commit, for redelivery detection
//	<seg>l<seq>            a dead letter
//	<seg>s<seq>            a seal record: batch seq, its chunk range, count, time range
//	<0>m<name>             metadata: "epoch", "state"
const (
	tagChunk = 'c'
	tagDict  = 'd'
	tagEvent = 'e'
	tagKeys  = 'k'
	tagDead  = 'l'
	tagMeta  = 'm'
	tagSeal  = 's'
)

// Streams: each has its own chunk sequence, so the chunks of one batch are
// consecutive within it. Summaries written by the downsample policy get their
// own stream so they never interleave with an open aggregate batch.
const (
	streamRaw     = 0
	streamAgg     = 1
	streamSummary = 2
	numStreams    = 3
)

// Side lanes: records kept one per key <seg><tag><seq>, each lane with its
// own sequence, outside the batches. They share recovery, reading,
// acknowledgement and reclaiming; only their record formats differ.
type side uint8

const (
	sideDead side = iota
	sideEvent
	numSides
)

var (
	sideTags  = [numSides]byte{tagDead, tagEvent}
	sideNames = [numSides]string{"dead letter", "event"}
)

func streamKind(s uint8) string {
	if s == streamRaw {
		return "raw"
	}
	return "agg"
}

func segPrefix(seg uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 18), seg) }

func chunkPrefix(seg uint64, stream uint8) []byte { return append(segPrefix(seg), tagChunk, stream) }

func chunkKey(seg uint64, stream uint8, n uint64) []byte {
	return binary.BigEndian.AppendUint64(chunkPrefix(seg, stream), n)
}

func tagPrefix(seg uint64, tag byte) []byte { return append(segPrefix(seg), tag) }

func seqKey(seg uint64, tag byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64(tagPrefix(seg, tag), n)
}

func dictKey(seg uint64, id uint32) []byte {
	return binary.BigEndian.AppendUint32(tagPrefix(seg, tagDict), id)
}

func metaKey(name string) []byte { return append(tagPrefix(0, tagMeta), name...) }

// keySeg and keyTail read a key of the layout above; callers check lengths.
func keySeg(k []byte) uint64 { return binary.BigEndian.Uint64(k[:8]) }

func keyTail64(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(k)-8:]) }
