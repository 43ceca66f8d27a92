package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
)

// Sealed is a sealed batch, ready to publish with batch.Encode.
type Sealed struct {
	ID       batch.ID
	Kind     string // schemas.KindRaw or schemas.KindAgg
	Readings []schemas.Reading
	SealedAt time.Time
	// Replay: the batch was sealed before this process started, or its first
	// reading arrived more than ReplayAge ago. It is backlog, not live data.
	Replay bool
}

// sealed is the Sealed form of batch m with its readings rs.
func (b *Buffer) sealed(m *batchMeta, rs []schemas.Reading) Sealed {
	return Sealed{
		ID:       batch.ID{Edge: b.edge, Epoch: b.epoch, Seq: m.seq},
		Kind:     streamKind(m.rec.stream),
		Readings: rs,
		SealedAt: time.Unix(0, m.rec.sealedAt).UTC(),
		Replay:   m.replay || b.now().UnixNano()-m.rec.bornAt > int64(ReplayAge),
	}
}

// Next blocks until a sealed batch with Seq > after exists and returns the
// one with the lowest Seq, or until ctx ends or the buffer is closed. The
// same batch is returned, identical, as long as it is not acknowledged. A
// batch that cannot be read is dropped (reason "corrupt") and skipped.
func (b *Buffer) Next(ctx context.Context, after uint64) (Sealed, error) {
	for {
		b.mu.Lock()
		bs := b.s.batches
		i := sort.Search(len(bs), func(i int) bool { return bs[i].seq > after })
		for i < len(bs) && bs[i].busy {
			i++
		}
		if i < len(bs) {
			m := bs[i]
			b.s.handedOut = max(b.s.handedOut, m.seq)
			b.mu.Unlock()
			rs, err := b.readBatch(m)
			if err == nil {
				return b.sealed(m, rs), nil
			}
			if errors.Is(err, ErrClosed) {
				return Sealed{}, err
			}
			if b.isLive(m) {
				b.log.Error("buffer: unreadable batch dropped", "seq", m.seq, "err", err)
				if err := b.remove(m.seq, ReasonCorrupt); err != nil {
					return Sealed{}, err
				}
			}
			after = m.seq
			continue
		}
		ch := b.s.sealedCh
		b.s.waiters++
		b.mu.Unlock()
		b.poke() // Run seals by age only while someone waits.
		select {
		case <-ch:
		case <-ctx.Done():
		case <-b.closedCh:
		}
		b.mu.Lock()
		b.s.waiters--
		b.mu.Unlock()
		if err := stopErr(ctx, b.closedCh); err != nil {
			return Sealed{}, err
		}
	}
}

func (b *Buffer) isLive(m *batchMeta) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.s.batches, m)
}

// readBatch reads a batch's chunks: a range scan per segment it spans.
func (b *Buffer) readBatch(m *batchMeta) ([]schemas.Reading, error) {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return nil, ErrClosed
	}
	out := b.takeReadings(m.rec.count)
	err := b.db.View(func(txn *badger.Txn) error {
		for _, seg := range m.rec.segs {
			prefix := chunkPrefix(seg, m.rec.stream)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			for it.Seek(chunkKey(seg, m.rec.stream, m.rec.first)); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()
				if len(k) != len(prefix)+8 {
					continue
				}
				if keyTail64(k) > m.rec.last {
					break
				}
				err := item.Value(func(v []byte) error {
					h, err := decodeChunkHeader(v)
					if err != nil {
						return err
					}
					if len(out)+h.count > m.rec.count {
						return fmt.Errorf("%w: more readings than the seal record's %d", ErrCorrupt, m.rec.count)
					}
					dict := b.dictSnapshot(seg)
					next, err := decodeChunk(h, dict, b.edge, out)
					if errors.Is(err, errDictMiss) {
						if dict, err = b.loadDict(txn, seg); err != nil {
							return err
						}
						next, err = decodeChunk(h, dict, b.edge, out)
						if errors.Is(err, errDictMiss) {
							err = fmt.Errorf("%w: chunk names a string missing from segment %d's dictionary", ErrCorrupt, seg)
						}
					}
					out = next
					return err
				})
				if err != nil {
					it.Close()
					return fmt.Errorf("segment %d chunk %d: %w", seg, keyTail64(k), err)
				}
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read batch %d: %w", m.seq, err)
	}
	if len(out) != m.rec.count {
		return nil, fmt.Errorf("read batch %d: %w: %d readings found, the seal record says %d", m.seq, ErrCorrupt, len(out), m.rec.count)
	}
	return out, nil
}

// maxSpares: Recycle keeps at most this many reading slices, one for each
// lane of the forwarder.
const maxSpares = 2

// takeReadings returns an empty slice for n readings, a recycled one if one
// is large enough.
func (b *Buffer) takeReadings(n int) []schemas.Reading {
	b.spareMu.Lock()
	defer b.spareMu.Unlock()
	for i, rs := range b.spares {
		if cap(rs) >= n {
			b.spares = slices.Delete(b.spares, i, i+1)
			return rs[:0]
		}
	}
	return make([]schemas.Reading, 0, n)
}

// Recycle hands back the Readings of a Sealed batch (from Next or Claim)
// once the caller is done with them: it must not use them afterwards. A
// batch's readings take 112 bytes each, over a MiB for a batch of 10,000:
// the forwarder reads one for every batch it sends and drops it once
// encoded, so without reuse the live stream alone allocated, and cleared,
// megabytes a second. Up to maxSpares slices are kept, the largest.
func (b *Buffer) Recycle(rs []schemas.Reading) {
	if cap(rs) == 0 {
		return
	}
	b.spareMu.Lock()
	defer b.spareMu.Unlock()
	if len(b.spares) < maxSpares {
		b.spares = append(b.spares, rs[:0])
		return
	}
	// Replace the smallest spare if rs is larger.
	small := 0
	for i := range b.spares {
		if cap(b.spares[i]) < cap(b.spares[small]) {
			small = i
		}
	}
	if cap(rs) > cap(b.spares[small]) {
		b.spares[small] = rs[:0]
	}
}

func (b *Buffer) dictSnapshot(seg uint64) []string {
	b.dictMu.Lock()
	defer b.dictMu.Unlock()
	return b.dicts[seg]
}

// loadDict reads the dictionary entries of seg that the cache lacks.
func (b *Buffer) loadDict(txn *badger.Txn, seg uint64) ([]string, error) {
	// Clip: another reader may extend the cached slice concurrently.
	d := slices.Clip(b.dictSnapshot(seg))
	prefix := tagPrefix(seg, tagDict)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(dictKey(seg, uint32(len(d)+1))); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) != len(prefix)+4 {
			continue
		}
		if id := binary.BigEndian.Uint32(k[len(prefix):]); id != uint32(len(d)+1) {
			return nil, fmt.Errorf("%w: segment %d dictionary jumps to id %d after %d", ErrCorrupt, seg, id, len(d))
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		d = append(d, string(v))
	}
	b.dictMu.Lock()
	defer b.dictMu.Unlock()
	if len(d) > len(b.dicts[seg]) {
		b.dicts[seg] = d
	}
	return b.dicts[seg], nil
}

// Ack marks a batch acknowledged by JetStream (durably: one small
// transaction). Acknowledgements may come in any order; acknowledging an
// acknowledged or dropped batch is a no-op. Space comes back when every
// batch of a segment is acknowledged.
func (b *Buffer) Ack(seq uint64) error { return b.remove(seq, "") }

// remove deletes a batch's seal record; reason "" is an acknowledgement,
// anything else a drop counted under that reason.
func (b *Buffer) remove(seq uint64, reason string) error {
	b.mu.Lock()
	bs := b.s.batches
	i := sort.Search(len(bs), func(i int) bool { return bs[i].seq >= seq })
	if i == len(bs) || bs[i].seq != seq {
		next := b.s.nextSeq
		b.mu.Unlock()
		if seq == 0 || seq >= next {
			return fmt.Errorf("ack batch %d: %w: the next sequence is %d", seq, ErrUnknownSeq, next)
		}
		return nil
	}
	m := bs[i]
	if m.busy {
		b.mu.Unlock()
		return nil
	}
	m.busy = true
	b.mu.Unlock()

	err := b.update(func(txn *writeTxn) error { return txn.Delete(seqKey(m.sealSeg, tagSeal, m.seq)) })

	b.mu.Lock()
	if err != nil {
		m.busy = false
		b.mu.Unlock()
		return fmt.Errorf("ack batch %d: %w", seq, err)
	}
	b.s.batches = slices.DeleteFunc(b.s.batches, func(x *batchMeta) bool { return x == m })
	b.s.sealedCount -= int64(m.rec.count)
	b.s.sealedBytes -= m.bytes
	for _, seg := range m.refSegs {
		b.s.segs[seg]--
	}
	if reason != "" {
		b.s.dropped[reason] += uint64(m.rec.count)
	}
	b.mu.Unlock()
	if reason != "" {
		b.m.dropped.WithLabelValues(reason).Add(float64(m.rec.count))
	}
	b.poke() // space freed; a segment may be reclaimable
	return nil
}

// update runs a durable write transaction outside Run.
func (b *Buffer) update(fn func(*writeTxn) error) error {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return ErrClosed
	}
	txn := &writeTxn{txn: b.db.NewTransaction(true)}
	defer txn.txn.Discard()
	if err := fn(txn); err != nil {
		return err
	}
	if len(txn.ops) == 0 {
		return nil
	}
	return b.jr.commit(txn.ops, txn.txn.Commit)
}

// writeTxn is a Badger transaction whose writes are also recorded for the
// journal.
type writeTxn struct {
	txn *badger.Txn
	ops []byte
}

func (w *writeTxn) Get(k []byte) (*badger.Item, error) { return w.txn.Get(k) }

func (w *writeTxn) Set(k, v []byte) error {
	if err := w.txn.Set(k, v); err != nil {
		return err
	}
	w.ops = appendOp(w.ops, opSet, k, v)
	return nil
}

func (w *writeTxn) Delete(k []byte) error {
	if err := w.txn.Delete(k); err != nil {
		return err
	}
	w.ops = appendOp(w.ops, opDelete, k, nil)
	return nil
}

// NextDeadLetter blocks until a dead letter with a sequence above after
// exists and returns the lowest, or until ctx ends or the buffer is closed.
func (b *Buffer) NextDeadLetter(ctx context.Context, after uint64) (uint64, DeadLetter, error) {
	return nextSide(ctx, b, sideDead, after, decodeDead)
}

// AckDeadLetter marks a dead letter forwarded; like Ack it is idempotent.
func (b *Buffer) AckDeadLetter(seq uint64) error { return b.removeSide(sideDead, seq) }

// NextEvent blocks until an event with a sequence above after exists and
// returns the lowest, or until ctx ends or the buffer is closed.
func (b *Buffer) NextEvent(ctx context.Context, after uint64) (uint64, Event, error) {
	return nextSide(ctx, b, sideEvent, after, decodeEvent)
}

// AckEvent marks an event forwarded; like Ack it is idempotent.
func (b *Buffer) AckEvent(seq uint64) error { return b.removeSide(sideEvent, seq) }

// nextSide returns the lowest record of side lane sd above after, decoded; a
// record that does not decode is logged and removed.
func nextSide[T any](ctx context.Context, b *Buffer, sd side, after uint64, decode func([]byte) (T, error)) (uint64, T, error) {
	var zero T
	for {
		b.mu.Lock()
		l := &b.s.sides[sd]
		if seq, seg, ok := l.next(after); ok {
			b.mu.Unlock()
			rec, err := readSide(b, sd, seg, seq, decode)
			if err == nil {
				return seq, rec, nil
			}
			if errors.Is(err, ErrClosed) {
				return 0, zero, err
			}
			b.log.Error("buffer: unreadable "+sideNames[sd]+" dropped", "seq", seq, "err", err)
			if err := b.removeSide(sd, seq); err != nil {
				return 0, zero, err
			}
			after = seq
			continue
		}
		ch := l.ch
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-b.closedCh:
		}
		if err := stopErr(ctx, b.closedCh); err != nil {
			return 0, zero, err
		}
	}
}

func readSide[T any](b *Buffer, sd side, seg, seq uint64, decode func([]byte) (T, error)) (T, error) {
	var rec T
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return rec, ErrClosed
	}
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(seqKey(seg, sideTags[sd], seq))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) (err error) {
			rec, err = decode(v)
			return err
		})
	})
	if err != nil {
		return rec, fmt.Errorf("read %s %d: %w", sideNames[sd], seq, err)
	}
	return rec, nil
}

func (b *Buffer) removeSide(sd side, seq uint64) error {
	b.mu.Lock()
	l := &b.s.sides[sd]
	seg, ok := l.live(seq)
	if !ok || !l.setBusy(seq) {
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	var bytes int64
	err := b.update(func(txn *writeTxn) error {
		k := seqKey(seg, sideTags[sd], seq)
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil // already gone from disk: only the memory is left to update
		} else if err != nil {
			return err
		}
		bytes = int64(len(k)) + item.ValueSize()
		return txn.Delete(k)
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		l.clearBusy(seq)
		return fmt.Errorf("ack %s %d: %w", sideNames[sd], seq, err)
	}
	l.remove(seq, bytes)
	b.s.segs[seg]--
	b.poke()
	return nil
}
