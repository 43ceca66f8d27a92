package batch

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// writeStream returns the Arrow IPC stream of one record: the schema, the
// record's dictionaries, the record, and the end-of-stream marker, byte for
// byte what a new ipc.Writer with zstd writes for it.
//
// It does not make a new ipc.Writer per batch, because each one makes its own
// zstd encoder, and arrow-go has no option to pass one in: that encoder was
// two thirds of the bytes Encode allocated (about 2.4 MB per batch, against a
// few hundred KB of columns), most of the agent's allocation while a backlog
// drains, and the garbage collector's work with it. A few long-lived writers
// are kept instead. The schema message is the same for every batch and is
// written once; each batch then costs its dictionaries and its record. A
// stream writer leaves out a dictionary equal to the one it wrote last, which
// a self-contained message must not do, so after every batch the writer
// writes, and throws away, a sentinel record whose dictionaries hold a word
// no batch has (a NUL byte, which no device, metric or unit name may
// contain; a unit may, and a batch whose dictionary is that one word gets a
// new writer): the next batch's dictionaries then always differ from the last
// ones written, and are always written.
func writeStream(rec arrow.RecordBatch) ([]byte, error) {
	if likeSentinel(rec) {
		return writeStreamOnce(rec)
	}
	s, err := takeStreamWriter()
	if err != nil {
		return nil, err
	}
	s.sink.Reset()
	if err := s.w.Write(rec); err != nil {
		s.close()
		return nil, err
	}
	body := s.sink.Bytes()
	out := make([]byte, 0, len(streamSchema)+len(body)+len(endOfStream))
	out = append(append(append(out, streamSchema...), body...), endOfStream...)
	// A failed sentinel leaves the writer unusable, not this batch.
	if err := s.reset(); err == nil {
		putStreamWriter(s)
	}
	return out, nil
}

// writeStreamOnce writes rec with a writer of its own.
func writeStreamOnce(rec arrow.RecordBatch) ([]byte, error) {
	var b bytes.Buffer
	w := ipc.NewWriter(&b, streamWriteOpt...)
	if err := w.Write(rec); err != nil {
		w.Close()
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// likeSentinel reports whether a dictionary of rec is the sentinel's.
func likeSentinel(rec arrow.RecordBatch) bool {
	for _, c := range rec.Columns() {
		if d, ok := c.(*array.Dictionary); ok {
			if w, ok := d.Dictionary().(*array.String); ok && w.Len() == 1 && w.IsValid(0) && w.Value(0) == sentinelWord {
				return true
			}
		}
	}
	return false
}

// endOfStream ends an Arrow IPC stream: the continuation marker and a zero
// metadata length.
var endOfStream = []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}

// maxIdleWriters: the agent encodes at most a live and a backlog batch at
// once. Each idle writer keeps a zstd encoder (2.5 MB on the heap) and its
// output buffer; a sync.Pool would not keep them, as it empties at every
// other garbage collection, several times between two batches in a busy
// agent. A writer left unused for idleWriterTTL is let go, so an agent that
// stopped forwarding (its uplink down) does not hold them through the outage.
const maxIdleWriters = 2

var idleWriterTTL = 10 * time.Second

// maxKeptSink: an output buffer that grew past this for an unusually large
// batch is not kept.
const maxKeptSink = 1 << 20

// sentinelWord is the one word of the sentinel's dictionaries.
const sentinelWord = "\x00"

type streamWriter struct {
	sink bytes.Buffer
	w    *ipc.Writer
	// sentinel is this writer's own: arrow-go arrays build their dictionary
	// lazily, so one shared by writers would be written to concurrently.
	sentinel arrow.RecordBatch
	used     time.Time // when it was last put back
}

var (
	streams struct {
		sync.Mutex
		idle  []*streamWriter
		sweep *time.Timer // lets go of writers idle for idleWriterTTL
	}
	streamInit     sync.Once
	streamSchema   []byte
	streamInitErr  error
	streamWriteOpt = []ipc.Option{ipc.WithSchema(Schema), ipc.WithZstd(), ipc.WithAllocator(memory.DefaultAllocator)}
)

func takeStreamWriter() (*streamWriter, error) {
	streamInit.Do(initStreams)
	if streamInitErr != nil {
		return nil, streamInitErr
	}
	streams.Lock()
	if n := len(streams.idle); n > 0 {
		s := streams.idle[n-1]
		streams.idle = streams.idle[:n-1]
		streams.Unlock()
		return s, nil
	}
	streams.Unlock()
	s := &streamWriter{sentinel: newSentinel()}
	s.w = ipc.NewWriter(&s.sink, streamWriteOpt...)
	// The first write also writes the schema, which streamSchema holds.
	if err := s.reset(); err != nil {
		return nil, err
	}
	return s, nil
}

func putStreamWriter(s *streamWriter) {
	if s.sink.Cap() > maxKeptSink {
		s.sink = bytes.Buffer{}
	}
	s.used = time.Now()
	streams.Lock()
	defer streams.Unlock()
	if len(streams.idle) >= maxIdleWriters {
		s.close()
		return
	}
	streams.idle = append(streams.idle, s)
	if streams.sweep == nil {
		streams.sweep = time.AfterFunc(idleWriterTTL, sweepStreamWriters)
	}
}

// sweepStreamWriters lets go of the writers unused for idleWriterTTL. The
// most recently used writer is last in the idle list.
func sweepStreamWriters() {
	streams.Lock()
	defer streams.Unlock()
	now := time.Now()
	keep := streams.idle[:0]
	for _, s := range streams.idle {
		if now.Sub(s.used) < idleWriterTTL {
			keep = append(keep, s)
		} else {
			s.close()
		}
	}
	clear(streams.idle[len(keep):])
	streams.idle = keep
	if len(keep) == 0 {
		streams.sweep = nil
		return
	}
	streams.sweep.Reset(idleWriterTTL - now.Sub(keep[0].used))
}

// reset writes the sentinel and empties the output buffer.
func (s *streamWriter) reset() error {
	err := s.w.Write(s.sentinel)
	s.sink.Reset()
	if err != nil {
		s.close()
		return fmt.Errorf("arrow stream writer: %w", err)
	}
	return nil
}

func (s *streamWriter) close() {
	s.w.Close()
	s.sentinel.Release()
}

func initStreams() {
	// The schema message: what a writer writes before its first record.
	var b bytes.Buffer
	w := ipc.NewWriter(&b, streamWriteOpt...)
	if err := w.Close(); err != nil {
		streamInitErr = fmt.Errorf("arrow stream writer: %w", err)
		return
	}
	if !bytes.HasSuffix(b.Bytes(), endOfStream) {
		streamInitErr = fmt.Errorf("arrow stream writer: a stream without records does not end with the end-of-stream marker")
		return
	}
	streamSchema = bytes.Clone(b.Bytes()[:b.Len()-len(endOfStream)])
}

// newSentinel returns a record of no rows whose dictionaries hold
// sentinelWord.
func newSentinel() arrow.RecordBatch {
	mem := memory.DefaultAllocator
	ts := array.NewInt64Builder(mem)
	defer ts.Release()
	tsArr := ts.NewArray()
	defer tsArr.Release()
	tsData := array.NewData(Schema.Field(0).Type, 0, tsArr.Data().Buffers(), nil, 0, 0)
	defer tsData.Release()
	val := array.NewFloat64Builder(mem)
	defer val.Release()
	cols := []arrow.Array{array.MakeFromData(tsData)}
	for _, f := range Schema.Fields()[1:] {
		if f.Type.ID() == arrow.FLOAT64 {
			cols = append(cols, val.NewArray())
			continue
		}
		d := newDict(mem, nil, 0)
		d.words.Append(sentinelWord)
		cols = append(cols, d.finish())
		d.release()
	}
	rec := array.NewRecordBatch(Schema, cols, 0)
	for _, c := range cols {
		c.Release()
	}
	return rec
}
