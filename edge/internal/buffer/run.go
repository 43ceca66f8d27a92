package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/updraft-io/updraft/schemas"
)

// Run does the group commits, seals batches, enforces max_bytes and max_age
// and gives disk space back, until ctx ends or Close is called. It returns
// nil then, or the first storage error (after which the buffer must be closed
// and reopened: its state on disk is consistent, the in-memory one may not
// be). Queued appends are committed before Run returns; appends waiting for
// space get ctx's error.
func (b *Buffer) Run(ctx context.Context) error {
	b.pendMu.Lock()
	if b.closing || b.running {
		b.pendMu.Unlock()
		return fmt.Errorf("run buffer %s: %w", b.cfg.Dir, ErrClosed)
	}
	b.running = true
	b.pendMu.Unlock()
	defer close(b.runDone)

	tctx, stopTrim := context.WithCancel(ctx)
	trimDone := make(chan struct{})
	go func() { defer close(trimDone); b.trimmer(tctx) }()
	err := b.run(ctx)
	stopTrim()
	<-trimDone
	cause := ctx.Err()
	if cause == nil {
		cause = ErrClosed
	}
	if err != nil {
		cause = err
	}
	if ferr := b.shutdown(err == nil, cause); err == nil {
		err = ferr
	}
	if err != nil {
		b.log.Error("buffer stopped", "err", err)
		return fmt.Errorf("run buffer %s: %w", b.cfg.Dir, err)
	}
	return nil
}

// housekeepingEvery: how often max_age is checked and the disk size measured.
const housekeepingEvery = time.Second

func (b *Buffer) run(ctx context.Context) error {
	// A lowered batch_max_readings can leave a recovered open batch too big.
	t := b.newTx()
	for stream := range uint8(numStreams) {
		if b.w.open[stream].count >= b.cfg.BatchMaxReadings {
			if err := b.seal(t, stream); err != nil {
				return err
			}
		}
	}
	if err := t.commit(); err != nil {
		return err
	}
	house := time.NewTicker(housekeepingEvery)
	defer house.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	housekeeping := true
	for {
		if err := b.step(housekeeping); err != nil {
			return err
		}
		housekeeping = false
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if d, ok := b.nextWake(); ok {
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-b.stop:
			return nil
		case <-b.kick:
		case <-timer.C:
		case <-house.C:
			housekeeping = true
		case <-b.house:
			housekeeping = true
		}
	}
}

// step does whatever is due.
func (b *Buffer) step(housekeeping bool) error {
	reqs := b.takePending()
	if err := b.enforce(housekeeping); err != nil {
		return err
	}
	if len(reqs) > 0 || len(b.w.held) > 0 {
		b.mu.Lock()
		blocked := b.s.blocked
		b.mu.Unlock()
		if blocked {
			b.w.held = append(b.w.held, reqs...)
		} else {
			all := append(b.w.held, reqs...)
			b.w.held = nil
			if err := b.commit(all); err != nil {
				return err
			}
			if err := b.enforce(false); err != nil {
				return err
			}
		}
	}
	if err := b.sealByAge(); err != nil {
		return err
	}
	if err := b.reclaim(); err != nil {
		return err
	}
	if housekeeping && time.Since(b.w.lastGC) >= gcEvery {
		b.w.gcDue = true
	}
	if b.w.gcDue {
		b.w.lastGC = time.Now()
		collected, err := b.collectValueLog()
		if err != nil {
			// Not a storage failure of the buffer: the file stays until a
			// later try, and the directory measures what it holds.
			b.log.Warn("buffer: dead value-log file not collected; retried later", "err", err)
		}
		b.w.gcDue = collected
		if collected {
			b.poke() // another file may be dead too
			b.updateDisk()
		}
	}
	if housekeeping && time.Since(b.w.lastDisk) >= 10*time.Second {
		b.w.lastDisk = time.Now()
		b.updateDisk()
	}
	return nil
}

// The mapped files' resident size is checked every trimPoll (a read of
// /proc/self/statm: a few microseconds on an idle system, 60-300 µs in an
// agent ingesting 14,000 messages a second on one core, so every 10 ms cost
// it over 1 % of that core), and they are paged out once it has
// grown trimSlack past what the last pass left, or trimMax after it. A pass
// costs a system call per mapping: with every chunk in the LSM tree a 1 GiB
// backlog was 2,000 tables and a pass took 10-150 ms, so a fixed period spent
// a tenth of a core or more with nothing to page out. With chunks in the
// value log the same backlog is about 250 mappings, and the forwarder reads
// them at a few MiB/s during a catch-up, which a 2 MiB margin follows
// closely: at 20 ms it overshoots by a few hundred KiB at most
// (docs/buffer.md, "Memory").
const (
	trimPoll  = 20 * time.Millisecond
	trimSlack = 2 << 20
	trimMax   = 10 * time.Second
)

// trimmer keeps Badger's mapped files out of the resident set
// (trimMappings) until ctx ends, when the profile asks for it.
func (b *Buffer) trimmer(ctx context.Context) {
	if profiles[b.cfg.Profile].trimMappings {
		trimLoop(ctx, b.cfg.Dir, b.log)
	}
}

func trimLoop(ctx context.Context, dir string, log *slog.Logger) {
	t := time.NewTicker(trimPoll)
	defer t.Stop()
	res, err := openResidentFiles()
	if err != nil {
		res = nil // page out every trimMax
	} else {
		defer res.close()
	}
	floor, last := int64(-1), time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(last) < trimMax {
			if res == nil {
				continue
			}
			if r, err := res.bytes(); err == nil && floor >= 0 && r-floor < trimSlack {
				continue
			}
		}
		if _, err := trimMappings(dir); err != nil {
			log.Warn("buffer: cannot page out Badger's mapped files; resident memory will include the tables read and written", "err", err)
			return
		}
		last = time.Now()
		if res != nil {
			if r, err := res.bytes(); err == nil {
				floor = r
			}
		}
	}
}

// gcEvery: how often the value-log GC is tried besides after each reclaim,
// for files a restart left or that an open iterator kept.
const gcEvery = 10 * time.Second

// collectValueLog deletes at most one value-log file whose entries are
// dropped (vlogDiscardRatio; store.go, valueThresholdDevice) and reports
// whether it did. It runs in Run between commits, with dbMu held: Badger's
// GC reads the newest version while writes update it without a lock (a data
// race inside Badger v4.9.6), and it may write the live rest of a file back,
// which DropPrefix would refuse. One file per step bounds the pause of the
// commits to reading one file (valueLogFileSize).
func (b *Buffer) collectValueLog() (bool, error) {
	start := time.Now()
	b.dbMu.Lock()
	// The GC copies the file's live entries without a sync, then deletes
	// the file, unless an iterator is open: then the deletion waits for the
	// last iterator to close, here after a checkpoint made the copies
	// durable.
	hold := b.db.NewTransaction(false)
	it := hold.NewIterator(badger.IteratorOptions{Prefix: metaKey("gc-hold")})
	err := b.db.RunValueLogGC(vlogDiscardRatio)
	if err == nil {
		err = b.jr.checkpoint()
	}
	it.Close()
	hold.Discard()
	b.dbMu.Unlock()
	switch {
	case err == nil:
		b.m.vlogCollected.Inc()
		b.log.Debug("buffer: value-log file collected", "took", time.Since(start).Round(time.Microsecond))
		return true, nil
	case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
		return false, nil
	default:
		return false, fmt.Errorf("value-log GC: %w", err)
	}
}

// takePending returns the queued appends once the commit window has passed
// since the first of them arrived, or once many are queued.
func (b *Buffer) takePending() []*request {
	b.pendMu.Lock()
	defer b.pendMu.Unlock()
	if len(b.pending) == 0 {
		return nil
	}
	if time.Since(b.pendSince) < b.cfg.CommitInterval && b.pendReadings < earlyCommit {
		return nil
	}
	reqs := b.pending
	b.pending, b.pendReadings = nil, 0
	return reqs
}

// nextWake is when Run must act without being poked.
func (b *Buffer) nextWake() (time.Duration, bool) {
	var d time.Duration
	ok := false
	wake := func(x time.Duration) {
		if !ok || x < d {
			d, ok = max(x, 0), true
		}
	}
	b.pendMu.Lock()
	if len(b.pending) > 0 {
		wake(b.cfg.CommitInterval - time.Since(b.pendSince))
	}
	b.pendMu.Unlock()
	b.mu.Lock()
	waiting := b.s.waiters > 0
	b.mu.Unlock()
	if waiting {
		now := b.now().UnixNano()
		for _, o := range b.w.open {
			if o.count > 0 {
				wake(time.Duration(o.bornAt + int64(b.cfg.BatchMaxAge) - now))
			}
		}
	}
	return d, ok
}

// shutdown commits what is queued (so those callers get their
// acknowledgement) and fails what waits for space.
func (b *Buffer) shutdown(healthy bool, cause error) error {
	b.pendMu.Lock()
	b.pendClosed = true
	reqs := b.pending
	b.pending, b.pendReadings = nil, 0
	b.drained.Broadcast()
	b.pendMu.Unlock()
	b.mu.Lock()
	blocked := b.s.blocked
	b.mu.Unlock()
	var err error
	if healthy && !blocked && len(reqs) > 0 {
		err = b.commit(reqs)
		if err != nil {
			cause = err
		}
		reqs = nil
	}
	for _, r := range append(b.w.held, reqs...) {
		r.done(cause)
	}
	b.w.held = nil
	return err
}

// tx is one group commit: Badger writes (split into several transactions if
// they exceed Badger's transaction size) and the in-memory changes that
// become visible only once all the writes are durable.
type tx struct {
	b        *Buffer
	txn      *badger.Txn
	ops      []byte // txn's writes, for the journal
	written  int64  // key and value bytes in txn
	refAdds  []uint64
	releases []uint64
	sealed   []*batchMeta
	sides    [numSides][]sideRec
	done     []*request
	keys     []uint64
	skipped  int
	dropped  map[string]int64
	summed   map[string]int64
}

func (b *Buffer) newTx() *tx { return &tx{b: b, ops: b.w.ops} }

func (t *tx) set(k, v []byte) error {
	if t.txn == nil {
		t.txn = t.b.db.NewTransaction(true)
	}
	err := t.txn.SetEntry(badger.NewEntry(k, v))
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err = t.flush(); err != nil {
			return err
		}
		t.txn = t.b.db.NewTransaction(true)
		err = t.txn.SetEntry(badger.NewEntry(k, v))
	}
	if err != nil {
		return fmt.Errorf("buffer write: %w", err)
	}
	t.ops = appendOp(t.ops, opSet, k, v)
	t.written += int64(len(k) + len(v))
	return nil
}

func (t *tx) del(k []byte) error {
	if t.txn == nil {
		t.txn = t.b.db.NewTransaction(true)
	}
	err := t.txn.Delete(k)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err = t.flush(); err != nil {
			return err
		}
		t.txn = t.b.db.NewTransaction(true)
		err = t.txn.Delete(k)
	}
	if err != nil {
		return fmt.Errorf("buffer delete: %w", err)
	}
	t.ops = appendOp(t.ops, opDelete, k, nil)
	t.written += int64(len(k))
	return nil
}

// flush commits the current Badger transaction through the journal: one
// fdatasync.
func (t *tx) flush() error {
	if t.txn == nil {
		return nil
	}
	start := time.Now()
	err := t.b.jr.commit(t.ops, t.txn.Commit)
	t.txn.Discard()
	t.txn = nil
	t.ops = t.ops[:0]
	t.b.w.ops = t.ops // reused by the next commit
	if err != nil {
		return fmt.Errorf("buffer commit: %w", err)
	}
	t.b.m.commitSeconds.Observe(time.Since(start).Seconds())
	t.b.m.commits.Inc()
	t.b.m.written.Add(float64(t.written))
	t.b.mu.Lock()
	t.b.s.commits++
	t.b.s.written += t.written
	t.b.mu.Unlock()
	t.written = 0
	return nil
}

func (t *tx) refAdd(seg uint64) { t.refAdds = append(t.refAdds, seg) }

func (t *tx) count(m *map[string]int64, reason string, n int) {
	if n == 0 {
		return
	}
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[reason] += int64(n)
}

// commit makes the transaction durable, then publishes its effects and
// calls the done callbacks.
func (t *tx) commit() error {
	b, w := t.b, &t.b.w
	if len(t.keys) > 0 {
		if err := t.set(seqKey(w.cur, tagKeys, w.nextChunk), encodeKeys(t.keys)); err != nil {
			return t.fail(err)
		}
		w.nextChunk++
		w.curBytes += int64(17 + 8*len(t.keys))
	}
	if w.dirty {
		if err := t.set(metaKey("state"), w.st.encode()); err != nil {
			return t.fail(err)
		}
		w.dirty = false
	}
	if err := t.flush(); err != nil {
		return t.fail(err)
	}
	if len(t.keys) > 0 {
		w.ring.add(w.cur, t.keys)
	}

	b.mu.Lock()
	s := &b.s
	for _, seg := range t.refAdds {
		s.segs[seg]++
	}
	for _, seg := range t.releases {
		s.segs[seg]--
	}
	for _, m := range t.sealed {
		s.batches = append(s.batches, m)
		s.sealedCount += int64(m.rec.count)
		s.sealedBytes += m.bytes
	}
	for sd, recs := range t.sides {
		l := &s.sides[sd]
		for _, d := range recs {
			l.add(d.seg, d.seq, d.bytes)
		}
		if len(recs) > 0 {
			close(l.ch)
			l.ch = make(chan struct{})
		}
	}
	for i := range w.open {
		s.open[i] = w.open[i].info()
	}
	s.nextSeq = w.st.nextSeq
	s.pinned = w.ring.pin(w.cur)
	s.duplicates += uint64(t.skipped)
	for r, n := range t.dropped {
		s.dropped[r] += uint64(n)
	}
	for r, n := range t.summed {
		s.summarised[r] += uint64(n)
	}
	if len(t.sealed) > 0 {
		close(s.sealedCh)
		s.sealedCh = make(chan struct{})
	}
	b.mu.Unlock()

	for r, n := range t.dropped {
		b.m.dropped.WithLabelValues(r).Add(float64(n))
	}
	for r, n := range t.summed {
		b.m.summarised.WithLabelValues(r).Add(float64(n))
	}
	b.m.duplicates.Add(float64(t.skipped))
	for _, r := range t.done {
		r.done(nil)
	}
	// Rotating here, between commits, keeps every commit in one segment.
	if w.curBytes >= b.segBytes {
		w.cur++
		w.curBytes = 0
		clear(w.dict)
		b.mu.Lock()
		b.s.segs[w.cur] = 0
		b.s.cur = w.cur
		b.s.pinned = w.ring.pin(w.cur)
		b.mu.Unlock()
	}
	return nil
}

// commit writes queued appends as one group commit.
func (b *Buffer) commit(reqs []*request) error {
	t := b.newTx()
	t.done = reqs // every caller hears the outcome, whatever fails
	w := &b.w
	at := b.now().UnixNano()
	for _, r := range reqs {
		if r.rec != nil {
			seq := w.st.nextSide[r.side]
			w.st.nextSide[r.side]++
			w.dirty = true
			k := seqKey(w.cur, sideTags[r.side], seq)
			if err := t.set(k, r.rec); err != nil {
				return t.fail(err)
			}
			n := int64(len(k) + len(r.rec))
			w.curBytes += n
			t.sides[r.side] = append(t.sides[r.side], sideRec{seq: seq, seg: w.cur, bytes: n})
			t.refAdd(w.cur)
			continue
		}
		if r.msg != nil {
			if r.msg.Dup && (w.ring.contains(r.msg.Key) || slices.Contains(t.keys, r.msg.Key)) {
				t.skipped++
				continue
			}
			t.keys = append(t.keys, r.msg.Key)
		}
		if err := b.addReadings(t, r.stream, r.rs, at); err != nil {
			return t.fail(err)
		}
	}
	if err := b.flushChunks(t, at); err != nil {
		return t.fail(err)
	}
	return t.commit()
}

func (t *tx) fail(err error) error {
	if t.txn != nil {
		t.txn.Discard()
		t.txn = nil
	}
	for _, r := range t.done {
		r.done(err)
	}
	return err
}

// addReadings encodes rs into the stream's chunk of this commit. The chunk is
// written when it reaches maxChunkBytes or fills the open batch (which is
// then sealed), and at the end of the commit (flushChunks): one chunk per
// stream per commit however many appends it holds.
func (b *Buffer) addReadings(t *tx, stream uint8, rs []schemas.Reading, at int64) error {
	w := &b.w
	e := &w.encs[stream]
	for i := range rs {
		r := &rs[i]
		dev, err := b.intern(t, r.Device)
		if err != nil {
			return err
		}
		met, err := b.intern(t, r.Metric)
		if err != nil {
			return err
		}
		var unit uint32
		if r.Unit != "" {
			if unit, err = b.intern(t, r.Unit); err != nil {
				return err
			}
		}
		e.add(dev, met, unit, r.TS, r.Value)
		if w.open[stream].count+e.count >= b.cfg.BatchMaxReadings || e.size() >= maxChunkBytes {
			if err := b.flushChunk(t, stream, at); err != nil {
				return err
			}
		}
	}
	return nil
}

// intern returns the id of s in the current segment's dictionary, adding it
// (a write in this commit, ahead of any chunk that uses it) if new.
func (b *Buffer) intern(t *tx, s string) (uint32, error) {
	w := &b.w
	if id, ok := w.dict[s]; ok {
		return id, nil
	}
	id := uint32(len(w.dict) + 1)
	k := dictKey(w.cur, id)
	if err := t.set(k, []byte(s)); err != nil {
		return 0, err
	}
	w.dict[s] = id
	w.curBytes += int64(len(k) + len(s))
	return id, nil
}

// flushChunk writes the stream's pending chunk and seals the open batch if
// the chunk filled it.
func (b *Buffer) flushChunk(t *tx, stream uint8, at int64) error {
	w := &b.w
	e := &w.encs[stream]
	if e.count == 0 {
		return nil
	}
	o := &w.open[stream]
	k, v := chunkKey(w.cur, stream, w.nextChunk), e.value(at)
	if err := t.set(k, v); err != nil {
		return err
	}
	w.nextChunk++
	size := int64(len(k) + len(v))
	w.curBytes += size
	if len(o.segs) == 0 || o.segs[len(o.segs)-1] != w.cur {
		t.refAdd(w.cur)
	}
	o.add(w.cur, keyTail64(k), chunkHeader{count: e.count, minTS: e.minTS, maxTS: e.maxTS, at: at}, size)
	e.reset()
	if o.count >= b.cfg.BatchMaxReadings {
		return b.seal(t, stream)
	}
	return nil
}

func (b *Buffer) flushChunks(t *tx, at int64) error {
	for stream := range uint8(numStreams) {
		if err := b.flushChunk(t, stream, at); err != nil {
			return err
		}
	}
	return nil
}

// seal turns a stream's open batch into a sealed batch: a seal record with
// the next sequence. From here on the batch's identity and content are fixed.
func (b *Buffer) seal(t *tx, stream uint8) error {
	w := &b.w
	o := &w.open[stream]
	if o.count == 0 {
		return nil
	}
	seq := w.st.nextSeq
	w.st.nextSeq++
	rec := sealRecord{stream: stream, count: o.count, minTS: o.minTS, maxTS: o.maxTS, bornAt: o.bornAt,
		sealedAt: b.now().UnixNano(), bytes: o.bytes, first: o.first, last: o.last, segs: o.segs}
	k, v := seqKey(w.cur, tagSeal, seq), rec.encode()
	if err := t.set(k, v); err != nil {
		return err
	}
	w.curBytes += int64(len(k) + len(v))
	w.st.sealedUpTo[stream] = o.last
	w.dirty = true
	m := &batchMeta{seq: seq, sealSeg: w.cur, rec: rec, bytes: o.bytes + int64(len(k)+len(v)), refSegs: withSeg(rec.segs, w.cur)}
	if len(m.refSegs) != len(rec.segs) {
		t.refAdd(w.cur)
	}
	t.sealed = append(t.sealed, m)
	*o = openBatch{}
	return nil
}

// sealByAge seals open batches older than batch_max_age while the forwarder
// waits in Next. Nobody waiting means the forwarder is busy with a backlog
// or offline; batches then grow to batch_max_readings, so an outage yields
// few large batches instead of many small ones.
func (b *Buffer) sealByAge() error {
	b.mu.Lock()
	waiting := b.s.waiters > 0
	b.mu.Unlock()
	if !waiting {
		return nil
	}
	cutoff := b.now().UnixNano() - int64(b.cfg.BatchMaxAge)
	t := b.newTx()
	for stream := range uint8(numStreams) {
		if o := &b.w.open[stream]; o.count > 0 && o.bornAt <= cutoff {
			if err := b.seal(t, stream); err != nil {
				return t.fail(err)
			}
		}
	}
	return t.commit()
}

// reclaim drops every segment nothing refers to any more: all its batches,
// dead letters and events acknowledged, dropped or summarised, no open batch in it,
// and no recent message key. One DropPrefix removes its keys and tombstones.
func (b *Buffer) reclaim() error {
	b.mu.Lock()
	var drop []uint64
	for seg, refs := range b.s.segs {
		if refs < 0 {
			b.mu.Unlock()
			return fmt.Errorf("buffer: segment %d has %d references", seg, refs)
		}
		if refs == 0 && seg != b.s.cur && seg < b.s.pinned {
			drop = append(drop, seg)
		}
	}
	b.mu.Unlock()
	if len(drop) == 0 {
		return nil
	}
	slices.Sort(drop)
	prefixes := make([][]byte, len(drop))
	for i, seg := range drop {
		prefixes[i] = segPrefix(seg)
	}
	start := time.Now()
	b.dbMu.Lock()
	// No journal record may outlive the drop: replayed, an older record
	// would write keys of a dropped segment again.
	err := b.jr.checkpoint()
	if err == nil {
		err = b.db.DropPrefix(prefixes...)
	}
	b.dbMu.Unlock()
	if err != nil {
		return fmt.Errorf("buffer: drop segments %v: %w", drop, err)
	}
	b.mu.Lock()
	for _, seg := range drop {
		delete(b.s.segs, seg)
	}
	b.mu.Unlock()
	b.dictMu.Lock()
	for _, seg := range drop {
		delete(b.dicts, seg)
	}
	b.dictMu.Unlock()
	b.m.reclaimed.Add(float64(len(drop)))
	b.w.gcDue = true
	b.log.Debug("buffer: segments reclaimed", "segments", drop, "took", time.Since(start).Round(time.Millisecond))
	b.updateDisk()
	return nil
}

// updateDisk measures the directory. It touches only mutex-guarded state, so
// it is safe from any goroutine; the run loop paces how often it is called.
func (b *Buffer) updateDisk() {
	alloc, apparent, err := dirSize(b.cfg.Dir)
	if err != nil {
		b.log.Warn("buffer: measure directory", "err", err)
		return
	}
	b.mu.Lock()
	b.s.diskBytes, b.s.diskApparent = alloc, apparent
	b.mu.Unlock()
}

// Reasons for dropped and summarised readings.
const (
	ReasonMaxBytes = "max_bytes"
	ReasonMaxAge   = "max_age"
	ReasonCorrupt  = "corrupt"
)

// enforce applies max_bytes and max_age (docs/buffer.md, "Limits").
func (b *Buffer) enforce(housekeeping bool) error {
	now := b.now().UnixNano()
	cutoff := int64(-1 << 63)
	if b.cfg.MaxAge > 0 {
		cutoff = now - int64(b.cfg.MaxAge)
	}
	if b.cfg.Policy == PolicyBlock {
		b.mu.Lock()
		_, bytes := b.bufferedLocked()
		born, _, ok := b.oldestLocked()
		b.s.blocked = bytes >= int64(b.cfg.MaxBytes) || ok && born < cutoff
		b.mu.Unlock()
		return nil
	}
	if housekeeping && b.cfg.MaxAge > 0 {
		// Open batches too old are sealed so that the policy can take them.
		t := b.newTx()
		for stream := range uint8(numStreams) {
			if o := &b.w.open[stream]; o.count > 0 && o.bornAt < cutoff {
				if err := b.seal(t, stream); err != nil {
					return t.fail(err)
				}
			}
		}
		if err := t.commit(); err != nil {
			return err
		}
		for {
			done, err := b.shed(ReasonMaxAge, func(m *batchMeta) bool { return m.rec.bornAt < cutoff })
			if err != nil {
				return err
			}
			if done {
				break
			}
		}
	}
	sealed := false
	for {
		if !b.overBytes() {
			break
		}
		done, err := b.shed(ReasonMaxBytes, nil)
		if err != nil {
			return err
		}
		if !done {
			continue
		}
		if sealed || !b.hasOpen() {
			break
		}
		// Only the open batches are left: seal them so they can go too.
		sealed = true
		t := b.newTx()
		for stream := range uint8(numStreams) {
			if err := b.seal(t, stream); err != nil {
				return t.fail(err)
			}
		}
		if err := t.commit(); err != nil {
			return err
		}
	}
	over := b.overBytes()
	b.mu.Lock()
	b.s.blocked = over
	b.mu.Unlock()
	return nil
}

func (b *Buffer) overBytes() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, bytes := b.bufferedLocked()
	return bytes > int64(b.cfg.MaxBytes)
}

func (b *Buffer) hasOpen() bool {
	for _, o := range b.w.open {
		if o.count > 0 {
			return true
		}
	}
	return false
}

// eligibleLocked: a batch the forwarder has not been handed yet (one it has
// may be in flight to JetStream already) and that is not being acknowledged.
func (b *Buffer) eligibleLocked(m *batchMeta) bool {
	return m.seq > b.s.handedOut && !m.busy && !m.claimed
}

// shed removes batches under the policy: drop_oldest drops the oldest
// eligible batches matching match (all, if nil) until the buffer is under
// max_bytes (or, for max_age, all that match); downsample replaces the oldest
// matching raw batch by its summary. done reports that nothing was left to do.
func (b *Buffer) shed(reason string, match func(*batchMeta) bool) (done bool, err error) {
	b.mu.Lock()
	var victims []*batchMeta
	_, bytes := b.bufferedLocked()
	limit := int64(b.cfg.MaxBytes)
	pick := func(raw bool) {
		for _, m := range b.s.batches {
			if !b.eligibleLocked(m) || match != nil && !match(m) || raw && m.rec.stream != streamRaw {
				continue
			}
			victims = append(victims, m)
			bytes -= m.bytes
			if b.cfg.Policy == PolicyDownsample || match == nil && bytes <= limit {
				return
			}
		}
	}
	if b.cfg.Policy == PolicyDownsample {
		pick(true)
	}
	if len(victims) == 0 {
		pick(false)
	}
	for _, m := range victims {
		b.s.batches = slices.DeleteFunc(b.s.batches, func(x *batchMeta) bool { return x == m })
		b.s.sealedCount -= int64(m.rec.count)
		b.s.sealedBytes -= m.bytes
	}
	b.mu.Unlock()
	if len(victims) == 0 {
		return true, nil
	}
	t := b.newTx()
	for _, m := range victims {
		if err := t.del(seqKey(m.sealSeg, tagSeal, m.seq)); err != nil {
			return false, t.fail(err)
		}
		t.releases = append(t.releases, m.refSegs...)
		if b.cfg.Policy == PolicyDownsample && m.rec.stream == streamRaw {
			if err := b.downsample(t, m, reason); err != nil {
				return false, t.fail(err)
			}
			continue
		}
		t.count(&t.dropped, reason, m.rec.count)
		b.log.Warn("buffer: batch dropped", "reason", reason, "seq", m.seq, "readings", m.rec.count)
	}
	return false, t.commit()
}

// downsample stages m's summary as a new batch of the summary stream.
func (b *Buffer) downsample(t *tx, m *batchMeta, reason string) error {
	rs, err := b.readBatch(m)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		b.log.Error("buffer: unreadable batch dropped", "seq", m.seq, "err", err)
		t.count(&t.dropped, ReasonCorrupt, m.rec.count)
		return nil
	}
	defer b.Recycle(rs) // summarise copies what it keeps
	sum, lost := summarise(rs)
	if len(sum) == 0 || len(sum) >= len(rs) {
		// A summary no smaller than the batch frees nothing.
		t.count(&t.dropped, reason, m.rec.count)
		b.log.Warn("buffer: batch dropped, its summary would not be smaller", "reason", reason, "seq", m.seq, "readings", m.rec.count)
		return nil
	}
	at := b.now().UnixNano()
	if err := b.addReadings(t, streamSummary, sum, at); err != nil {
		return err
	}
	if err := b.flushChunk(t, streamSummary, at); err != nil {
		return err
	}
	if err := b.seal(t, streamSummary); err != nil {
		return err
	}
	t.count(&t.summed, reason, len(rs)-lost)
	t.count(&t.dropped, reason, lost)
	b.log.Warn("buffer: batch summarised", "reason", reason, "seq", m.seq, "readings", len(rs), "summary_readings", len(sum))
	return nil
}
