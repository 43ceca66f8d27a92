package buffer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/updraft-io/updraft/schemas"
)

// ReplayAge: a batch whose first reading arrived longer ago than this is
// marked Replay when handed out (it is backlog, not live data).
const ReplayAge = time.Minute

// Buffer is the edge agent's durable buffer. Append and AppendMessage,
// AppendDeadLetter, AppendEvent, Next, Ack, NextDeadLetter, AckDeadLetter,
// NextEvent, AckEvent and Stats are
// safe from many goroutines; Run must be running for appends to complete.
type Buffer struct {
	cfg      Config
	edge     schemas.EdgeID
	log      *slog.Logger
	db       *badger.DB
	jr       *journal // every write to db goes through it (journal.go)
	epoch    uint64
	segBytes int64
	// now is the clock of ages and timestamps (tests move it); the commit
	// window uses the real monotonic clock.
	now func() time.Time
	m   *metrics
	reg prometheus.Registerer

	// dbMu: RLock for database use outside Run (Next, Ack, ...); Lock for
	// DropPrefix, which refuses concurrent writes, and for closing.
	dbMu     sync.RWMutex
	dbClosed bool

	// pendMu guards the queue of appends and the lifecycle.
	pendMu       sync.Mutex
	pending      []*request
	pendReadings int
	pendSince    time.Time
	pendClosed   bool
	running      bool
	closing      bool
	// queued counts the readings of AppendMessage calls whose done has not
	// been called yet (queued, being committed, or held by policy block);
	// AppendMessage waits on drained while it is at maxQueued.
	queued      int
	drained     *sync.Cond
	intakeWaits uint64 // AppendMessage calls that waited at maxQueued

	kick      chan struct{}
	stop      chan struct{}
	runDone   chan struct{}
	closedCh  chan struct{}
	closeOnce sync.Once
	closeErr  error
	house     chan struct{}

	w writer // owned by Run (and by Open before Run)

	mu sync.Mutex
	s  shared

	dictMu sync.Mutex
	dicts  map[uint64][]string

	spareMu sync.Mutex
	spares  [][]schemas.Reading // handed back by Recycle
}

// request is one Append, AppendMessage, AppendDeadLetter or AppendEvent
// call. A side record (rec not nil) is encoded by the caller.
type request struct {
	stream uint8
	rs     []schemas.Reading
	side   side
	rec    []byte
	msg    *Message
	done   func(error)
}

// writer is the state only the goroutine running Run touches.
type writer struct {
	ops       []byte // the journal record's buffer, reused between commits
	cur       uint64 // segment being written
	curBytes  int64
	dict      map[string]uint32
	nextChunk uint64
	st        state
	dirty     bool // st changed since it was last written
	open      [numStreams]openBatch
	held      []*request // waiting for space (policy block)
	ring      dedupRing
	encs      [numStreams]chunkEncoder // this commit's chunk of each stream
	lastDisk  time.Time
	gcDue     bool // a value-log file may be dead (collectValueLog)
	lastGC    time.Time
}

// openBatch is a stream's chunks that are durable but not yet sealed.
type openBatch struct {
	first, last  uint64
	segs         []uint64
	count        int
	minTS, maxTS int64
	bytes        int64
	bornAt       int64
}

// shared is the state under mu.
type shared struct {
	batches      []*batchMeta // live sealed batches, ascending seq
	sides        [numSides]sideLane
	segs         map[uint64]int
	cur          uint64
	pinned       uint64 // segments >= pinned hold recent message keys
	open         [numStreams]openBatch
	sealedCount  int64
	sealedBytes  int64
	handedOut    uint64
	waiters      int
	sealedCh     chan struct{}
	blocked      bool
	nextSeq      uint64
	dropped      map[string]uint64
	summarised   map[string]uint64
	duplicates   uint64
	commits      uint64
	written      int64
	diskBytes    int64
	diskApparent int64
}

type batchMeta struct {
	seq     uint64
	sealSeg uint64
	rec     sealRecord
	bytes   int64    // chunks plus seal record
	refSegs []uint64 // segments this batch keeps alive
	replay  bool     // sealed before this process started
	busy    bool     // being acknowledged or discarded
	claimed bool     // handed out by Claim: in flight to JetStream
}

// Open opens or creates the buffer in cfg.Dir and recovers its state by
// reading keys and seal records only, never the buffered readings. A new
// directory gets a random epoch. reg may be nil.
func Open(cfg Config, edge schemas.EdgeID, log *slog.Logger, reg prometheus.Registerer) (*Buffer, error) {
	if err := checkArch(strconv.IntSize); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := edge.Validate(); err != nil {
		return nil, fmt.Errorf("open buffer: edge id: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := readKeyFile(cfg.EncryptionKeyFile, log)
	if err != nil {
		return nil, err
	}
	if profiles[cfg.Profile].trimMappings {
		// Opening reads every table's index and first key, recovery reads
		// keys and seal records, and the kernel maps the pages around each
		// read: over 200 MiB with a 1 GiB backlog in 512 KiB tables, unless
		// paged out as it goes.
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); trimLoop(ctx, cfg.Dir, log) }()
		defer func() { stop(); <-done; _, _ = trimMappings(cfg.Dir) }()
	}
	db, err := openStore(cfg, key, log)
	if err != nil {
		return nil, err
	}
	jr, replayed, err := openJournal(cfg.Dir, key, db, log)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if replayed > 0 {
		log.Info("buffer: journal replayed", "records", replayed)
	}
	b := &Buffer{
		cfg: cfg, edge: edge, log: log, db: db, jr: jr, segBytes: cfg.segmentBytes(), now: time.Now, reg: reg,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), runDone: make(chan struct{}),
		closedCh: make(chan struct{}), house: make(chan struct{}, 1),
		dicts: map[uint64][]string{},
	}
	b.drained = sync.NewCond(&b.pendMu)
	b.s = shared{segs: map[uint64]int{}, sealedCh: make(chan struct{}),
		dropped: map[string]uint64{}, summarised: map[string]uint64{}}
	for i := range b.s.sides {
		b.s.sides[i].ch = make(chan struct{})
	}
	b.w.dict = map[string]uint32{}
	start := time.Now()
	if err := b.recover(); err != nil {
		return nil, errors.Join(err, jr.close(), db.Close())
	}
	b.updateDisk()
	b.m = newMetrics(b)
	if reg != nil {
		if err := b.m.register(reg); err != nil {
			return nil, errors.Join(fmt.Errorf("open buffer: register metrics: %w", err), jr.close(), db.Close())
		}
	}
	st := b.Stats()
	log.Info("buffer open", "dir", cfg.Dir, "epoch", fmt.Sprintf("%x", b.epoch), "batches", st.UnackedBatches,
		"readings", st.BufferedReadings, "dead_letters", st.DeadLetters, "events", st.Events, "bytes", st.BufferedBytes,
		"encrypted", key != nil, "took", time.Since(start).Round(time.Millisecond))
	return b, nil
}

// recoverSide adds the records of one side lane in seg to l, reading keys only.
func recoverSide(txn *badger.Txn, seg uint64, l *sideLane, tag byte, maxSeq *uint64) {
	prefix := tagPrefix(seg, tag)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		if len(k) != len(prefix)+8 {
			continue
		}
		seq := keyTail64(k)
		l.add(seg, seq, int64(len(k))+it.Item().ValueSize())
		*maxSeq = max(*maxSeq, seq)
	}
}

// Epoch is the buffer's random identity, fixed when its directory was created.
func (b *Buffer) Epoch() uint64 { return b.epoch }

// recover rebuilds the in-memory state from keys, seal records and the
// headers of the few unsealed chunks.
func (b *Buffer) recover() error {
	w, s := &b.w, &b.s
	var segs []uint64
	var maxSeal, maxNum uint64
	var maxSide [numSides]uint64
	var unsealed [numStreams][]chunkRef
	var keyRecs []keyRec
	err := b.db.View(func(txn *badger.Txn) error {
		if item, err := txn.Get(metaKey("epoch")); err == nil {
			if err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("%w: epoch of %d bytes", ErrCorrupt, len(v))
				}
				b.epoch = binary.BigEndian.Uint64(v)
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if item, err := txn.Get(metaKey("state")); err == nil {
			if err := item.Value(func(v []byte) (err error) { w.st, err = decodeState(v); return err }); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		segs = listSegments(txn)
		for _, seg := range segs {
			s.segs[seg] = 0
		}
		for _, seg := range segs {
			if err := b.recoverSeals(txn, seg, &maxSeal); err != nil {
				return err
			}
			for sd := range numSides {
				recoverSide(txn, seg, &s.sides[sd], sideTags[sd], &maxSide[sd])
			}
		}
		for _, m := range s.batches {
			if m.rec.last > w.st.sealedUpTo[m.rec.stream] {
				w.st.sealedUpTo[m.rec.stream] = m.rec.last
			}
		}
		for stream := range uint8(numStreams) {
			var err error
			unsealed[stream], err = b.scanUnsealed(txn, segs, stream)
			if err != nil {
				return err
			}
		}
		keyRecs = scanKeyRecords(txn, segs)
		return nil
	})
	if err != nil {
		return fmt.Errorf("open buffer %s: recover: %w", b.cfg.Dir, err)
	}
	if b.epoch == 0 {
		var e [8]byte
		for b.epoch == 0 {
			_, _ = rand.Read(e[:])
			b.epoch = binary.BigEndian.Uint64(e[:])
		}
		if err := b.update(func(txn *writeTxn) error { return txn.Set(metaKey("epoch"), e[:]) }); err != nil {
			return fmt.Errorf("create buffer %s: write epoch: %w", b.cfg.Dir, err)
		}
	}
	slices.SortFunc(s.batches, func(x, y *batchMeta) int { return cmpU64(x.seq, y.seq) })
	for sd := range s.sides {
		l := &s.sides[sd]
		l.sortRuns()
		for _, r := range l.runs {
			s.segs[r.seg] += int(r.last - r.first + 1)
		}
	}
	for _, m := range s.batches {
		for _, seg := range m.refSegs {
			s.segs[seg]++
		}
	}
	for stream, chunks := range unsealed {
		o := &w.open[stream]
		for _, c := range chunks {
			o.add(c.seg, c.n, c.h, c.bytes)
			maxNum = max(maxNum, c.n)
		}
		for _, seg := range o.segs {
			s.segs[seg]++
		}
		s.open[stream] = o.info()
	}
	for _, r := range keyRecs {
		w.ring.add(r.seg, r.keys)
		maxNum = max(maxNum, r.n)
	}
	w.st.nextSeq = max(w.st.nextSeq, maxSeal+1)
	for sd := range w.st.nextSide {
		w.st.nextSide[sd] = max(w.st.nextSide[sd], maxSide[sd]+1)
	}
	for _, up := range w.st.sealedUpTo {
		maxNum = max(maxNum, up)
	}
	w.nextChunk = maxNum + 1
	w.cur = 1
	if len(segs) > 0 {
		w.cur = segs[len(segs)-1] + 1
	}
	s.segs[w.cur] = 0
	s.cur = w.cur
	s.nextSeq = w.st.nextSeq
	s.pinned = w.ring.pin(w.cur)
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// listSegments finds the segments that hold keys with one seek per segment.
func listSegments(txn *badger.Txn) []uint64 {
	it := txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	var segs []uint64
	for seg := uint64(1); ; {
		it.Seek(segPrefix(seg))
		if !it.Valid() || len(it.Item().Key()) < 8 {
			return segs
		}
		s := keySeg(it.Item().Key())
		segs = append(segs, s)
		if s == math.MaxUint64 {
			return segs
		}
		seg = s + 1
	}
}

func (b *Buffer) recoverSeals(txn *badger.Txn, seg uint64, maxSeal *uint64) error {
	prefix := tagPrefix(seg, tagSeal)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) != len(prefix)+8 {
			continue
		}
		seq := keyTail64(k)
		*maxSeal = max(*maxSeal, seq)
		var rec sealRecord
		err := item.Value(func(v []byte) (err error) {
			rec, err = decodeSeal(v)
			return err
		})
		if err != nil {
			// Its chunks are unreachable without the record: count them as
			// lost rather than refuse to start.
			b.log.Error("buffer: unreadable seal record, batch skipped", "seq", seq, "segment", seg, "err", err)
			b.s.dropped["corrupt"]++
			continue
		}
		m := &batchMeta{seq: seq, sealSeg: seg, rec: rec, replay: true,
			bytes: rec.bytes + int64(len(k)) + item.ValueSize(), refSegs: withSeg(rec.segs, seg)}
		b.s.batches = append(b.s.batches, m)
		b.s.sealedCount += int64(rec.count)
		b.s.sealedBytes += m.bytes
	}
	return nil
}

// withSeg returns segs plus seg (ascending, no duplicates), as a new slice.
func withSeg(segs []uint64, seg uint64) []uint64 {
	out := slices.Clone(segs)
	if i, found := slices.BinarySearch(out, seg); !found {
		out = slices.Insert(out, i, seg)
	}
	return out
}

type chunkRef struct {
	seg, n uint64
	h      chunkHeader
	bytes  int64
}

// scanUnsealed walks a stream's chunks backwards from the newest until it
// reaches one at or below the stream's sealed watermark: what it passes is the
// open batch, at most batch_max_readings readings.
func (b *Buffer) scanUnsealed(txn *badger.Txn, segs []uint64, stream uint8) ([]chunkRef, error) {
	upTo := b.w.st.sealedUpTo[stream]
	var out []chunkRef
	for i := len(segs) - 1; i >= 0; i-- {
		seg := segs[i]
		prefix := chunkPrefix(seg, stream)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
		reached := false
		for it.Seek(append(slices.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != len(prefix)+8 {
				continue
			}
			n := keyTail64(k)
			if n <= upTo {
				reached = true
				break
			}
			c := chunkRef{seg: seg, n: n}
			err := item.Value(func(v []byte) (err error) {
				c.h, err = decodeChunkHeader(v)
				c.bytes = int64(len(k) + len(v))
				return err
			})
			if err != nil {
				b.log.Error("buffer: unreadable unsealed chunk skipped", "segment", seg, "chunk", n, "err", err)
				continue
			}
			c.h.body = nil
			out = append(out, c)
		}
		it.Close()
		if reached {
			break
		}
	}
	slices.Reverse(out)
	return out, nil
}

type keyRec struct {
	seg, n uint64
	keys   []uint64
}

// scanKeyRecords reads the newest message-key records, enough to refill the
// redelivery window, oldest first.
func scanKeyRecords(txn *badger.Txn, segs []uint64) []keyRec {
	var out []keyRec
	total := 0
	for i := len(segs) - 1; i >= 0 && total < dedupWindow; i-- {
		prefix := tagPrefix(segs[i], tagKeys)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
		for it.Seek(append(slices.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)); it.Valid() && total < dedupWindow; it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefix)+8 {
				continue
			}
			r := keyRec{seg: segs[i], n: keyTail64(k)}
			_ = it.Item().Value(func(v []byte) (err error) {
				r.keys, err = decodeKeys(v, nil)
				return err
			})
			total += len(r.keys)
			out = append(out, r)
		}
		it.Close()
	}
	slices.Reverse(out)
	return out
}

// info is the open batch without its segment list, for the shared state.
func (o *openBatch) info() openBatch {
	return openBatch{count: o.count, bytes: o.bytes, bornAt: o.bornAt, minTS: o.minTS, maxTS: o.maxTS}
}

// add appends a durable chunk to the open batch.
func (o *openBatch) add(seg, n uint64, h chunkHeader, bytes int64) {
	if o.count == 0 {
		*o = openBatch{first: n, minTS: h.minTS, maxTS: h.maxTS, bornAt: h.at}
	}
	o.last = n
	if len(o.segs) == 0 || o.segs[len(o.segs)-1] != seg {
		o.segs = append(o.segs, seg)
	}
	o.count += h.count
	o.bytes += bytes
	o.minTS, o.maxTS = min(o.minTS, h.minTS), max(o.maxTS, h.maxTS)
	o.bornAt = min(o.bornAt, h.at)
}

// Append queues readings, which must all belong to this buffer's edge, for
// the next group commit. done is called exactly once: with nil once they are
// durable (fsynced), or with an error; it must not block for long. Under
// policy block with the buffer full, done waits until there is space, or is
// called with the context's error when Run stops. The caller must not modify
// rs afterwards. kind is schemas.KindRaw or schemas.KindAgg.
func (b *Buffer) Append(kind string, rs []schemas.Reading, done func(error)) {
	b.append(kind, rs, nil, done)
}

// Message identifies the MQTT message a call's readings were decoded from, so
// that a re-delivery of a message that is already durable is not stored
// twice (docs/buffer.md, "Redelivered MQTT messages").
type Message struct {
	// Key is MessageKey(topic, packet id, payload).
	Key uint64
	// Dup is the MQTT DUP flag: the broker is re-sending the message.
	Dup bool
}

// MessageKey identifies an MQTT message: its topic, packet identifier and
// payload. A broker re-sends an unacknowledged message with the same packet
// identifier, so its key is unchanged.
func MessageKey(topic string, packetID uint16, payload []byte) uint64 {
	h := sha256.New()
	_, _ = h.Write([]byte(topic))
	_, _ = h.Write([]byte{0, byte(packetID >> 8), byte(packetID)})
	_, _ = h.Write(payload)
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// AppendMessage is Append for the readings of one MQTT message. The message
// key is stored with them; when m.Dup is set and the key is among the last
// 65,536 stored (the most a broker can have unacknowledged in one session),
// the readings are already durable: done(nil) is called without storing them
// again.
//
// AppendMessage returns once the readings are queued; it waits first while
// maxQueued readings of earlier messages are not yet durable, so that a
// stalled commit (Badger compacting, a policy block) holds the broker back
// instead of filling memory.
func (b *Buffer) AppendMessage(kind string, rs []schemas.Reading, m Message, done func(error)) {
	n := len(rs)
	if done == nil {
		done = func(error) {}
	}
	b.pendMu.Lock()
	if b.queued >= maxQueued && !b.pendClosed {
		b.intakeWaits++
		for b.queued >= maxQueued && !b.pendClosed {
			b.drained.Wait()
		}
	}
	b.queued += n
	b.pendMu.Unlock()
	b.append(kind, rs, &m, func(err error) {
		b.pendMu.Lock()
		b.queued -= n
		if b.queued < maxQueued {
			b.drained.Broadcast()
		}
		b.pendMu.Unlock()
		done(err)
	})
}

// maxQueued bounds the readings of MQTT messages the agent holds in memory
// before they are durable; the broker keeps the rest, unacknowledged. A
// pause of the commits while a backlog drained once held some 45,000 live
// readings, 16 MiB of the heap with their packets and callbacks; the bound
// is about 6 MiB (docs/buffer.md, "Group commit"). It is also the queue at
// which a commit starts before the end of its window (earlyCommit), so that
// waiting here never waits for the window.
const maxQueued = 1 << 14

func (b *Buffer) append(kind string, rs []schemas.Reading, m *Message, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	var stream uint8
	switch kind {
	case schemas.KindRaw:
		stream = streamRaw
	case schemas.KindAgg:
		stream = streamAgg
	default:
		done(fmt.Errorf("%w: kind %q, want %q or %q", ErrBadReading, kind, schemas.KindRaw, schemas.KindAgg))
		return
	}
	for i := range rs {
		r := &rs[i]
		if r.Region != b.edge.Region || r.Site != b.edge.Site || r.Edge != b.edge.Edge {
			done(fmt.Errorf("%w: reading %d is from %s.%s.%s, this buffer holds %s", ErrBadReading, i, r.Region, r.Site, r.Edge, b.edge))
			return
		}
		if err := r.Validate(); err != nil {
			done(fmt.Errorf("%w: reading %d: %w", ErrBadReading, i, err))
			return
		}
	}
	if len(rs) == 0 {
		done(nil)
		return
	}
	b.enqueue(&request{stream: stream, rs: rs, msg: m, done: done}, len(rs))
}

// AppendDeadLetter queues a dead letter; done is called like Append's. A
// payload longer than MaxDeadLetterPayload is cut and marked Truncated.
func (b *Buffer) AppendDeadLetter(d DeadLetter, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if len(d.Payload) > MaxDeadLetterPayload {
		d.Payload, d.Truncated = d.Payload[:MaxDeadLetterPayload], true
	}
	if len(d.Topic) > maxDeadTopic {
		d.Topic = d.Topic[:maxDeadTopic]
	}
	if len(d.Reason) > maxDeadReason {
		d.Reason = d.Reason[:maxDeadReason]
	}
	if d.ReceivedAt.IsZero() {
		d.ReceivedAt = b.now()
	}
	d.ReceivedAt = d.ReceivedAt.UTC()
	b.enqueue(&request{side: sideDead, rec: encodeDead(&d), done: done}, 1)
}

// AppendEvent queues an event; done is called like Append's. An event
// without a time gets the current one; one whose kind is empty or longer
// than 256 bytes, or whose payload is longer than MaxEventPayload, is
// refused with ErrBadEvent.
func (b *Buffer) AppendEvent(e Event, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	switch {
	case e.Kind == "" || len(e.Kind) > maxEventKind:
		done(fmt.Errorf("%w: kind %q must be 1 to %d bytes", ErrBadEvent, e.Kind, maxEventKind))
		return
	case len(e.Payload) > MaxEventPayload:
		done(fmt.Errorf("%w: payload of %d bytes, at most %d", ErrBadEvent, len(e.Payload), MaxEventPayload))
		return
	}
	if e.At.IsZero() {
		e.At = b.now()
	}
	b.enqueue(&request{side: sideEvent, rec: encodeEvent(&e), done: done}, 1)
}

// earlyCommit: this many queued readings are committed without waiting for
// the end of the window.
const earlyCommit = maxQueued

func (b *Buffer) enqueue(r *request, n int) {
	b.pendMu.Lock()
	if b.pendClosed {
		b.pendMu.Unlock()
		r.done(ErrClosed)
		return
	}
	if len(b.pending) == 0 {
		b.pendSince = time.Now()
	}
	b.pending = append(b.pending, r)
	b.pendReadings += n
	wake := len(b.pending) == 1 || b.pendReadings >= earlyCommit
	b.pendMu.Unlock()
	if wake {
		b.poke()
	}
}

// poke wakes Run.
func (b *Buffer) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Stats is a snapshot of the buffer, served by the agent's status API.
type Stats struct {
	Epoch   uint64 `json:"epoch"`
	NextSeq uint64 `json:"next_seq"`
	// BufferedReadings are durable and not yet acknowledged by JetStream:
	// in unacknowledged batches or in the open (unsealed) batches.
	BufferedReadings int64 `json:"buffered_readings"`
	OpenReadings     int64 `json:"open_readings"`
	UnackedBatches   int   `json:"unacked_batches"`
	DeadLetters      int   `json:"dead_letters"`
	// Events are events not yet acknowledged by JetStream.
	Events int `json:"events"`
	// BufferedBytes is what max_bytes limits: the encoded size of buffered
	// readings, dead letters and events.
	BufferedBytes int64 `json:"buffered_bytes"`
	MaxBytes      int64 `json:"max_bytes"`
	// DiskBytes is the space the directory takes (allocated blocks),
	// refreshed every few seconds; DiskApparentBytes counts file lengths.
	DiskBytes         int64 `json:"disk_bytes"`
	DiskApparentBytes int64 `json:"disk_apparent_bytes"`
	Segments          int   `json:"segments"`
	// OldestUnsent is the arrival time of the oldest buffered reading (what
	// max_age limits); OldestUnsentReading is its event time.
	OldestUnsent        time.Time `json:"oldest_unsent,omitzero"`
	OldestUnsentReading time.Time `json:"oldest_unsent_reading,omitzero"`
	// OldestUnsentAge is how long the oldest buffered reading has waited, in
	// seconds (0 when nothing is buffered): the backlog metric.
	OldestUnsentAge float64           `json:"oldest_unsent_age_seconds"`
	Blocked         bool              `json:"blocked"`
	Dropped         map[string]uint64 `json:"dropped"`
	Summarised      map[string]uint64 `json:"summarised"`
	Duplicates      uint64            `json:"duplicates"`
	// Commits counts Badger transactions (each one fsync); WrittenBytes the
	// key and value bytes they wrote since Open (what wears an SD card, before
	// Badger's own overhead: docs/buffer.md).
	Commits      uint64 `json:"commits"`
	WrittenBytes int64  `json:"written_bytes"`
	// QueuedReadings are readings of MQTT messages not yet durable;
	// IntakeWaits counts the messages whose intake waited because they
	// reached maxQueued (the broker then holds the rest: docs/buffer.md,
	// "Group commit").
	QueuedReadings int    `json:"queued_readings"`
	IntakeWaits    uint64 `json:"intake_waits"`
}

// Stats is cheap: it copies counters under a lock.
func (b *Buffer) Stats() Stats {
	b.pendMu.Lock()
	queued, waits := b.queued, b.intakeWaits
	b.pendMu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &b.s
	st := Stats{
		QueuedReadings: queued, IntakeWaits: waits,
		Epoch: b.epoch, NextSeq: s.nextSeq, UnackedBatches: len(s.batches),
		DeadLetters: s.sides[sideDead].count, Events: s.sides[sideEvent].count,
		MaxBytes: int64(b.cfg.MaxBytes), DiskBytes: s.diskBytes, DiskApparentBytes: s.diskApparent,
		Segments: len(s.segs), Blocked: s.blocked, Duplicates: s.duplicates, Commits: s.commits, WrittenBytes: s.written,
		Dropped: maps(s.dropped), Summarised: maps(s.summarised),
	}
	st.BufferedReadings, st.BufferedBytes = b.bufferedLocked()
	for _, o := range s.open {
		st.OpenReadings += int64(o.count)
	}
	if born, ts, ok := b.oldestLocked(); ok {
		st.OldestUnsent, st.OldestUnsentReading = time.Unix(0, born).UTC(), time.Unix(0, ts).UTC()
		st.OldestUnsentAge = max(0, float64(b.now().UnixNano()-born)/1e9)
	}
	return st
}

func maps(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (b *Buffer) bufferedLocked() (readings, bytes int64) {
	s := &b.s
	readings, bytes = s.sealedCount, s.sealedBytes
	for _, l := range s.sides {
		bytes += l.bytes
	}
	for _, o := range s.open {
		readings += int64(o.count)
		bytes += o.bytes
	}
	return readings, bytes
}

// oldestLocked returns the arrival and event time of the oldest buffered
// reading. Batches are sealed in arrival order, so the first batch and the
// open batches are the candidates (summaries are younger than what they
// replaced).
func (b *Buffer) oldestLocked() (born, ts int64, ok bool) {
	s := &b.s
	born, ts = math.MaxInt64, math.MaxInt64
	if len(s.batches) > 0 {
		born, ts, ok = s.batches[0].rec.bornAt, s.batches[0].rec.minTS, true
	}
	for _, o := range s.open {
		if o.count > 0 && o.bornAt < born {
			born, ts, ok = o.bornAt, o.minTS, true
		}
	}
	return born, ts, ok
}

// Close stops Run if it is running, waits for it, and closes the database.
// It is safe to call more than once.
func (b *Buffer) Close() error {
	b.closeOnce.Do(func() {
		b.pendMu.Lock()
		b.closing = true
		running := b.running
		b.pendMu.Unlock()
		close(b.stop)
		if running {
			<-b.runDone
		}
		b.pendMu.Lock()
		b.pendClosed = true
		left := b.pending
		b.pending = nil
		b.drained.Broadcast()
		b.pendMu.Unlock()
		for _, r := range left {
			r.done(ErrClosed)
		}
		close(b.closedCh)
		b.dbMu.Lock()
		b.dbClosed = true
		// The checkpoint leaves nothing for the next Open to replay.
		b.closeErr = errors.Join(b.jr.checkpoint(), b.jr.close(), b.db.Close())
		b.dbMu.Unlock()
		if b.reg != nil {
			b.m.unregister(b.reg)
		}
		if b.closeErr != nil {
			b.closeErr = fmt.Errorf("close buffer %s: %w", b.cfg.Dir, b.closeErr)
		}
	})
	return b.closeErr
}

// stopErr says why a blocking call stopped waiting: the buffer closed, or ctx.
func stopErr(ctx context.Context, closed <-chan struct{}) error {
	select {
	case <-closed:
		return ErrClosed
	default:
		return ctx.Err()
	}
}
