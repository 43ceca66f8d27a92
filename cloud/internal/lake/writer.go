package lake

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/parquet"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	lakefmt "github.com/updraft-io/updraft/schemas/lake"
)

// Writer is the single writer of a lake directory. Its methods other than
// Totals must be called from one goroutine.
type Writer struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	lock   *os.File
	ledger *Ledger
	// hook, when set, runs at each Stage of a flush; tests use it to stop a
	// flush (or the whole process) exactly there.
	hook func(Stage) error

	nextSeq    uint64
	pending    []pendingBatch
	pendingIDs map[batch.ID]struct{}
	// file is reused by every raw file a flush writes.
	file   rawFile
	props  *parquet.WriterProperties
	oldest time.Time
	// broken is set when a flush failed part-way: the buffer no longer
	// matches the disk, and only a new Open (which recovers) may go on.
	broken error

	mu     sync.Mutex
	totals Totals
}

// Totals describes everything committed to the lake (rebuilt from the
// manifests on Open) and what is buffered now.
type Totals struct {
	Commits        int64
	Rows           int64
	Batches        int64
	Files          int64
	LastCommit     time.Time
	PendingRows    int
	PendingBatches int
	// MissingFiles counts committed files found missing on Open.
	MissingFiles int
}

// Stage is a point in a flush after which a crash must still leave the lake
// consistent.
type Stage int

const (
	// StageCommitted: the manifest is durable, files still have temporary names.
	StageCommitted Stage = iota + 1
	// StageRenamed: files have their final names; the caller has not acked yet.
	StageRenamed
)

func (s Stage) String() string {
	switch s {
	case StageCommitted:
		return "committed"
	case StageRenamed:
		return "renamed"
	}
	return fmt.Sprintf("stage(%d)", int(s))
}

// AddResult says what Add did with a batch.
type AddResult int

const (
	// Added: the batch is buffered for the next flush.
	Added AddResult = iota
	// DuplicateCommitted: the batch is already in the lake; nothing was added
	// and the message can be acknowledged now.
	DuplicateCommitted
	// DuplicatePending: the batch is already buffered; nothing was added, and
	// the message must be acknowledged only after the next flush.
	DuplicatePending
)

// pendingBatch is a buffered batch: raw readings as columns, aggregates as
// readings.
type pendingBatch struct {
	id  batch.ID
	raw *batch.Columns
	agg *batch.Batch
}

func (p pendingBatch) rows() int {
	if p.raw != nil {
		return p.raw.Len()
	}
	return len(p.agg.Readings)
}

// partKey is one file of a flush: a partition of raw readings or of
// aggregates.
type partKey struct {
	agg bool
	p   lakefmt.Partition
}

func (k partKey) dir() string {
	if k.agg {
		return AggPartitionDir(k.p)
	}
	return k.p.Dir()
}

// Commit describes one completed flush.
type Commit struct {
	Seq uint64
	At  time.Time
	// Rows counts the rows written: raw readings plus wide aggregate rows.
	Rows    int64
	Files   []string // final paths relative to the lake root
	Batches []batch.ID
	// Raw are the committed batches of raw readings.
	Raw      []*batch.Columns
	Duration time.Duration
}

// Open locks dir, recovers it (see docs/lake.md) and returns a writer ready
// to buffer batches. log may be nil.
func Open(cfg Config, log *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Clean(cfg.Dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open lake %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open lake %s: %w", dir, err)
	}
	w := &Writer{
		cfg: cfg, dir: dir, log: log, lock: lock, ledger: NewLedger(),
		nextSeq: 1, pendingIDs: map[batch.ID]struct{}{}, props: writerProperties(cfg.RowGroupRows),
	}
	if err := w.recover(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("recover lake %s: %w", dir, err)
	}
	return w, nil
}

// Dir is the lake directory.
func (w *Writer) Dir() string { return w.dir }

// SetHook installs a function run at each stage of every flush; an error
// from it aborts the flush there as a crash would. It exists for
// fault-injection tests.
func (w *Writer) SetHook(h func(Stage) error) { w.hook = h }

// Committed reports whether the batch id is in the lake.
func (w *Writer) Committed(id batch.ID) bool { return w.ledger.Contains(id) }

// Add buffers b, received at now, unless it is a duplicate.
func (w *Writer) Add(b *batch.Batch, now time.Time) AddResult {
	if b.Kind == schemas.KindAgg {
		return w.add(pendingBatch{id: b.ID, agg: b}, now)
	}
	return w.add(pendingBatch{id: b.ID, raw: batch.ColumnsOf(b)}, now)
}

// AddColumns buffers c, received at now, unless it is a duplicate. It is
// Add for a batch decoded with batch.DecodeColumns.
func (w *Writer) AddColumns(c *batch.Columns, now time.Time) AddResult {
	if c.Kind == schemas.KindAgg {
		return w.add(pendingBatch{id: c.ID, agg: c.Batch()}, now)
	}
	return w.add(pendingBatch{id: c.ID, raw: c}, now)
}

func (w *Writer) add(p pendingBatch, now time.Time) AddResult {
	if w.ledger.Contains(p.id) {
		return DuplicateCommitted
	}
	if _, ok := w.pendingIDs[p.id]; ok {
		return DuplicatePending
	}
	if len(w.pending) == 0 {
		w.oldest = now
	}
	w.pending = append(w.pending, p)
	w.pendingIDs[p.id] = struct{}{}
	w.mu.Lock()
	w.totals.PendingBatches++
	w.totals.PendingRows += p.rows()
	w.mu.Unlock()
	return Added
}

// Due reports whether the buffer should be flushed at now: it holds at
// least RollRows rows or its oldest batch is RollInterval old.
func (w *Writer) Due(now time.Time) bool {
	if len(w.pending) == 0 {
		return false
	}
	w.mu.Lock()
	rows := w.totals.PendingRows
	w.mu.Unlock()
	return rows >= w.cfg.RollRows || !now.Before(w.oldest.Add(w.cfg.RollInterval))
}

// Deadline is when the buffer becomes due by age; zero when it is empty.
func (w *Writer) Deadline() time.Time {
	if len(w.pending) == 0 {
		return time.Time{}
	}
	return w.oldest.Add(w.cfg.RollInterval)
}

// PendingBatches is the number of buffered batches.
func (w *Writer) PendingBatches() int { return len(w.pending) }

// Totals returns the lake's totals; safe to call from any goroutine.
func (w *Writer) Totals() Totals {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.totals
}

// Flush writes every buffered batch to the lake and commits it. It returns
// nil and no error when nothing is buffered. When it returns an error the
// writer is unusable: Close it and Open again, which recovers.
func (w *Writer) Flush() (*Commit, error) {
	if w.broken != nil {
		return nil, w.broken
	}
	if w.lock == nil {
		return nil, ErrClosed
	}
	if len(w.pending) == 0 {
		return nil, nil
	}
	c, err := w.flush()
	if err != nil {
		w.broken = fmt.Errorf("lake writer stopped after a failed flush: %w", err)
		return nil, err
	}
	return c, nil
}

func (w *Writer) flush() (*Commit, error) {
	start := time.Now()
	seq := w.nextSeq
	parts := map[partKey][]*schemas.Reading{}
	rawParts := map[partKey][]segment{}
	for _, b := range w.pending {
		if b.raw != nil {
			splitByHour(b.raw, rawParts)
			continue
		}
		for i := range b.agg.Readings {
			r := &b.agg.Readings[i]
			k := partKey{agg: true, p: lakefmt.PartitionOf(r.Region, r.TS)}
			parts[k] = append(parts[k], r)
		}
	}
	keys := make([]partKey, 0, len(parts)+len(rawParts))
	for k := range parts {
		keys = append(keys, k)
	}
	for k := range rawParts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b partKey) int {
		return strings.Compare(a.dir(), b.dir())
	})

	m := manifest{Manifest: lakefmt.Manifest{Version: lakefmt.ManifestVersion, Seq: seq}}
	var temps, finals []string
	var rows int64
	cleanup := func() {
		for _, t := range temps {
			os.Remove(t)
		}
	}
	for _, k := range keys {
		rel := path.Join(k.dir(), lakefmt.DataFileName(seq, rand.Uint32()))
		final := filepath.Join(w.dir, filepath.FromSlash(rel))
		if err := mkdirDurable(w.dir, filepath.Dir(final)); err != nil {
			cleanup()
			return nil, err
		}
		temp := lakefmt.TempName(final)
		var info fileInfo
		var err error
		if k.agg {
			info, err = writeAggParquet(temp, foldAgg(parts[k]), w.cfg.RowGroupRows)
		} else {
			w.file.build(rawParts[k])
			info, err = w.file.write(temp, w.props, w.cfg.RowGroupRows)
		}
		if err != nil {
			cleanup()
			return nil, err
		}
		rows += info.rows
		temps, finals = append(temps, temp), append(finals, final)
		mf := lakefmt.ManifestFile{Path: rel, Rows: info.rows, MinTS: info.minTS, MaxTS: info.maxTS}
		if k.agg {
			m.AggFiles = append(m.AggFiles, mf)
			m.AggRows += info.rows
		} else {
			m.Files = append(m.Files, mf)
			m.Rows += info.rows
		}
	}
	// The manifest will name these temporary files, so their directory
	// entries must be durable before it is.
	if err := syncDirsOf(temps); err != nil {
		cleanup()
		return nil, err
	}
	m.Batches = make([]string, len(w.pending))
	for i, b := range w.pending {
		m.Batches[i] = b.id.MsgID()
	}
	m.CommittedAt = time.Now().UTC()
	data, err := json.Marshal(&m)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("encode manifest %d: %w", seq, err)
	}
	if err := writeFileAtomic(filepath.Join(w.dir, lakefmt.CommitsDir, lakefmt.ManifestName(seq)), data); err != nil {
		cleanup()
		return nil, fmt.Errorf("commit %d: %w", seq, err)
	}

	// Committed: from here on, recovery rolls this flush forward.
	w.nextSeq++
	c := &Commit{Seq: seq, At: m.CommittedAt, Rows: rows, Batches: make([]batch.ID, len(w.pending))}
	for i, b := range w.pending {
		w.ledger.Add(b.id)
		c.Batches[i] = b.id
		if b.raw != nil {
			c.Raw = append(c.Raw, b.raw)
		}
	}
	for _, f := range m.allFiles() {
		c.Files = append(c.Files, f.Path)
	}
	w.mu.Lock()
	w.totals.Commits++
	w.totals.Rows += rows
	w.totals.Batches += int64(len(w.pending))
	w.totals.Files += int64(len(c.Files))
	w.totals.LastCommit = m.CommittedAt
	w.totals.PendingBatches, w.totals.PendingRows = 0, 0
	w.mu.Unlock()
	w.pending = nil
	clear(w.pendingIDs)

	if err := w.runHook(StageCommitted); err != nil {
		return nil, err
	}
	for i := range temps {
		if err := os.Rename(temps[i], finals[i]); err != nil {
			return nil, fmt.Errorf("commit %d: publish %s: %w", seq, finals[i], err)
		}
	}
	if err := syncDirsOf(finals); err != nil {
		return nil, fmt.Errorf("commit %d: %w", seq, err)
	}
	if err := w.runHook(StageRenamed); err != nil {
		return nil, err
	}
	c.Duration = time.Since(start)
	return c, nil
}

func (w *Writer) runHook(s Stage) error {
	if w.hook == nil {
		return nil
	}
	if err := w.hook(s); err != nil {
		return fmt.Errorf("flush stopped at stage %s: %w", s, err)
	}
	return nil
}

// syncDirsOf fsyncs each distinct directory holding one of files.
func syncDirsOf(files []string) error {
	done := map[string]bool{}
	for _, f := range files {
		d := filepath.Dir(f)
		if done[d] {
			continue
		}
		done[d] = true
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the lake. Buffered batches that were not flushed are
// dropped: their messages are unacknowledged and will be redelivered.
func (w *Writer) Close() error {
	if w.lock == nil {
		return nil
	}
	err := w.lock.Close()
	w.lock = nil
	w.pending, w.pendingIDs = nil, map[batch.ID]struct{}{}
	if err != nil {
		return fmt.Errorf("close lake %s: %w", w.dir, err)
	}
	return nil
}

// Config is the writer's configuration.
func (w *Writer) Config() Config { return w.cfg }

// splitByHour adds the rows of c to the partitions of their hours. A batch
// within one hour, the usual case, is added whole.
func splitByHour(c *batch.Columns, parts map[partKey][]segment) {
	region := c.ID.Edge.Region
	if hourOf(c.MinTS) == hourOf(c.MaxTS) {
		k := partKey{p: lakefmt.PartitionOf(region, c.MinTS)}
		parts[k] = append(parts[k], segment{c: c})
		return
	}
	rows := map[int64][]int32{}
	for i, ts := range c.TS {
		h := hourOf(ts)
		rows[h] = append(rows[h], int32(i))
	}
	for h, rs := range rows {
		k := partKey{p: lakefmt.PartitionOf(region, h*int64(time.Hour))}
		parts[k] = append(parts[k], segment{c: c, rows: rs})
	}
}

// hourOf numbers the UTC hour of ts (ns), as lakefmt.PartitionOf divides time.
func hourOf(ts int64) int64 {
	h := ts / int64(time.Hour)
	if ts%int64(time.Hour) < 0 {
		h--
	}
	return h
}
