package buffer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The journal is the buffer's write-ahead log in front of Badger, which runs
// with SyncWrites off. Every write transaction is first appended to the
// journal as one record and made durable with one fdatasync, then committed
// to Badger, which leaves its own files to the page cache. A checkpoint
// fsyncs Badger's logs (the memtables' write-ahead logs and the value-log
// files written since the last checkpoint), then starts a new generation of
// the journal, which discards its records. On Open, the records of the
// current generation are applied to Badger again, in order, then a
// checkpoint follows.
//
// Why: Badger makes a commit durable with an msync of each of its two
// mapped logs; one pwrite and one fdatasync of a preallocated file cost the
// agent less CPU per message (docs/delivery.md, "What the durable commit
// costs").
//
// Replaying is safe because every record holds blind writes (whole values
// and deletes, no read-modify-write) and nothing changes Badger's data
// without a record, except three things that each checkpoint first:
//   - DropPrefix (reclaim): a record older than the drop would set keys of a
//     dropped segment again;
//   - the value-log GC: it copies a file's live entries (not synced) and then
//     deletes the file; the deletion is held back by an open iterator until a
//     checkpoint has made the copies durable (collectValueLog);
//   - Close.
//
// File layout: a header at offset 0 (magic, flags, generation, CRC-32C),
// records from offset journalData. A record is
//
//	length u32 | crc32c u32 of the rest | generation u64 | sequence u64 | payload
//
// and its payload a list of operations (opSet: key and value, opDelete:
// key), each length uvarint-prefixed, sealed with AES-256-GCM when the
// buffer is encrypted (key from HKDF-SHA256 of the buffer's key, nonce the
// generation and sequence, which are never reused). Replay stops at the
// first record that is short, fails its checksum, or is of another
// generation or out of sequence: that is where the last durable append
// ended. The file is preallocated with 4 KiB writes and its pages dropped
// from the cache; on ext4 a small write into a page cached as part of a
// larger folio would make fdatasync write the whole folio. Appends write
// whole pages (append), so the kernel never reads a page before writing it.
const (
	journalName     = "updraft.journal"
	journalMagic    = "UPDJRNL1"
	journalPage     = 4096
	journalData     = journalPage
	journalMinSize  = 8 << 20
	journalRecHead  = 24
	journalFlagEnc  = 1
	opSet           = 1
	opDelete        = 2
	journalMaxSeq   = math.MaxUint32
	journalHeadSize = 28
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	zeroPage   [journalPage]byte
)

type journal struct {
	dir string
	log *slog.Logger

	mu   sync.Mutex
	f    *os.File
	size int64
	off  int64
	gen  uint64
	seq  uint64
	aead cipher.AEAD
	buf  []byte
	// page holds the bytes of the page the last record ended in, from
	// the page's start to off.
	page []byte
	// vlogSynced: value-log files below this id were synced by a
	// checkpoint and are not written again.
	vlogSynced uint64
	broken     error

	checkpoints atomic.Uint64
	bytes       atomic.Uint64
}

// openJournal opens the journal of dir, creating it if there is none,
// applies its records to db and checkpoints. It returns the number of
// records applied.
func openJournal(dir string, key []byte, db *badger.DB, log *slog.Logger) (*journal, int, error) {
	j := &journal{dir: dir, log: log}
	if key != nil {
		k, err := hkdf.Key(sha256.New, key, nil, "updraft buffer journal", 32)
		if err != nil {
			return nil, 0, fmt.Errorf("open buffer journal: %w", err)
		}
		blk, err := aes.NewCipher(k)
		if err != nil {
			return nil, 0, fmt.Errorf("open buffer journal: %w", err)
		}
		if j.aead, err = cipher.NewGCM(blk); err != nil {
			return nil, 0, fmt.Errorf("open buffer journal: %w", err)
		}
	}
	path := filepath.Join(dir, journalName)
	_ = os.Remove(path + ".new") // a creation cut short
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if f, err = j.create(path); err != nil {
			return nil, 0, err
		}
		j.f, j.gen, j.off = f, 1, journalData
		return j, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open buffer journal: %w", err)
	}
	j.f = f
	n, err := j.replay(db)
	if err == nil {
		err = j.checkpointLocked()
	}
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return j, n, nil
}

// create writes a new, preallocated journal of generation 1.
func (j *journal) create(path string) (*os.File, error) {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create buffer journal: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		_ = f.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("create buffer journal: %w", err)
	}
	j.f = f
	if err := j.preallocate(0, journalMinSize); err != nil {
		return fail(err)
	}
	j.size = journalMinSize
	if _, err := f.WriteAt(j.header(1), 0); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	dropCache(f, 0, j.size)
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(j.dir); err != nil {
		return fail(err)
	}
	return f, nil
}

// preallocate writes zeros from off to end in 4 KiB writes.
func (j *journal) preallocate(off, end int64) error {
	for ; off < end; off += journalPage {
		if _, err := j.f.WriteAt(zeroPage[:], off); err != nil {
			return err
		}
	}
	return nil
}

// header is the first page of the file: a whole page, so that writing it
// does not read it first.
func (j *journal) header(gen uint64) []byte {
	h := make([]byte, journalPage)
	copy(h, journalMagic)
	if j.aead != nil {
		h[8] = journalFlagEnc
	}
	binary.LittleEndian.PutUint64(h[16:], gen)
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(h[:24], castagnoli))
	return h
}

// replay applies the records of the current generation to db.
func (j *journal) replay(db *badger.DB) (int, error) {
	fi, err := j.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("open buffer journal: %w", err)
	}
	j.size = fi.Size()
	h := make([]byte, journalHeadSize)
	if _, err := j.f.ReadAt(h, 0); err != nil {
		return 0, fmt.Errorf("open buffer journal: %w: header: %v", ErrCorrupt, err)
	}
	if string(h[:8]) != journalMagic || binary.LittleEndian.Uint32(h[24:]) != crc32.Checksum(h[:24], castagnoli) {
		return 0, fmt.Errorf("open buffer journal %s: %w: bad header", filepath.Join(j.dir, journalName), ErrCorrupt)
	}
	switch enc := h[8]&journalFlagEnc != 0; {
	case enc && j.aead == nil:
		return 0, fmt.Errorf("%w: the buffer's journal is encrypted and no encryption key file is set", ErrEncryptionKey)
	case !enc && j.aead != nil:
		return 0, fmt.Errorf("%w: the buffer's journal is not encrypted but an encryption key file is set", ErrEncryptionKey)
	}
	j.gen = binary.LittleEndian.Uint64(h[16:])
	r := io.NewSectionReader(j.f, journalData, j.size-journalData)
	var head [journalRecHead]byte
	var payload []byte
	n := 0
	for seq := uint64(1); ; seq++ {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			break
		}
		l := int64(binary.LittleEndian.Uint32(head[0:]))
		if l == 0 || l > j.size {
			break
		}
		if int64(cap(payload)) < l {
			payload = make([]byte, l)
		}
		payload = payload[:l]
		if _, err := io.ReadFull(r, payload); err != nil {
			break
		}
		sum := crc32.Update(crc32.Checksum(head[8:], castagnoli), castagnoli, payload)
		if sum != binary.LittleEndian.Uint32(head[4:]) ||
			binary.LittleEndian.Uint64(head[8:]) != j.gen || binary.LittleEndian.Uint64(head[16:]) != seq {
			break
		}
		ops := payload
		if j.aead != nil {
			ops, err = j.aead.Open(nil, j.nonce(j.gen, seq), payload, head[8:])
			if err != nil {
				// The checksum held, so the bytes are as written: the key
				// is not the one they were written with.
				return n, fmt.Errorf("%w: journal record %d does not decrypt with this key: %v", ErrEncryptionKey, seq, err)
			}
		}
		if err := applyOps(db, ops); err != nil {
			return n, fmt.Errorf("open buffer journal: record %d: %w", seq, err)
		}
		n++
	}
	return n, nil
}

func (j *journal) nonce(gen, seq uint64) []byte {
	var n [12]byte
	binary.LittleEndian.PutUint64(n[:], gen)
	binary.LittleEndian.PutUint32(n[8:], uint32(seq))
	return n[:]
}

// applyOps writes one record's operations to db in one transaction.
func applyOps(db *badger.DB, ops []byte) error {
	txn := db.NewTransaction(true)
	defer txn.Discard()
	for len(ops) > 0 {
		op := ops[0]
		k, rest, ok := cutUvarintBytes(ops[1:])
		if !ok {
			return fmt.Errorf("%w: journal operation", ErrCorrupt)
		}
		switch op {
		case opSet:
			v, rest2, ok := cutUvarintBytes(rest)
			if !ok {
				return fmt.Errorf("%w: journal value", ErrCorrupt)
			}
			if err := txn.Set(k, v); err != nil {
				return err
			}
			rest = rest2
		case opDelete:
			if err := txn.Delete(k); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: journal operation %d", ErrCorrupt, op)
		}
		ops = rest
	}
	return txn.Commit()
}

func cutUvarintBytes(b []byte) (v, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, nil, false
	}
	return b[w : w+int(n)], b[w+int(n):], true
}

// appendOp adds one operation to a record's payload.
func appendOp(ops []byte, op byte, k, v []byte) []byte {
	ops = append(ops, op)
	ops = binary.AppendUvarint(ops, uint64(len(k)))
	ops = append(ops, k...)
	if op == opSet {
		ops = binary.AppendUvarint(ops, uint64(len(v)))
		ops = append(ops, v...)
	}
	return ops
}

// commit appends ops as one record, makes it durable, then calls apply
// (the Badger commit) while still holding the journal, so that Badger sees
// the writes in journal order.
func (j *journal) commit(ops []byte, apply func() error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken != nil {
		return j.broken
	}
	if len(ops) > 0 {
		if err := j.append(ops); err != nil {
			return err
		}
	}
	return apply()
}

func (j *journal) append(ops []byte) error {
	l := len(ops)
	if j.aead != nil {
		l += j.aead.Overhead()
	}
	need := pageUp(int64(len(j.page) + journalRecHead + l))
	if pageStart(j.off)+need > j.size || j.seq >= journalMaxSeq {
		if err := j.checkpointLocked(); err != nil {
			return err
		}
		need = pageUp(int64(journalRecHead + l))
		if end := journalData + 2*need; end > j.size {
			if err := j.preallocate(j.size, end); err != nil {
				return j.fail(err)
			}
			j.size = end
		}
	}
	// The write starts at the page the last record ended in, with that
	// page's bytes again, and is padded to a page boundary: a write that
	// covers whole pages never makes the kernel read a page first.
	seq := j.seq + 1
	var head [journalRecHead]byte
	binary.LittleEndian.PutUint32(head[0:], uint32(l))
	binary.LittleEndian.PutUint64(head[8:], j.gen)
	binary.LittleEndian.PutUint64(head[16:], seq)
	buf := append(j.buf[:0], j.page...)
	at := len(buf)
	buf = append(buf, head[:]...)
	if j.aead != nil {
		buf = j.aead.Seal(buf, j.nonce(j.gen, seq), ops, head[8:])
	} else {
		buf = append(buf, ops...)
	}
	binary.LittleEndian.PutUint32(buf[at+4:], crc32.Checksum(buf[at+8:], castagnoli))
	recEnd := len(buf)
	buf = append(buf, zeroPage[:pageUp(int64(recEnd))-int64(recEnd)]...)
	j.buf = buf
	if _, err := j.f.WriteAt(buf, pageStart(j.off)); err != nil {
		return j.fail(err)
	}
	if err := fdatasync(j.f); err != nil {
		return j.fail(err)
	}
	j.off = pageStart(j.off) + int64(recEnd)
	j.page = append(j.page[:0], buf[pageStart(int64(recEnd)):recEnd]...)
	j.seq = seq
	j.bytes.Add(uint64(recEnd - at))
	return nil
}

func pageStart(off int64) int64 { return off &^ (journalPage - 1) }
func pageUp(n int64) int64      { return (n + journalPage - 1) &^ (journalPage - 1) }

// fail marks the journal unusable: after a failed write or sync, what the
// file holds is unknown, and appending after it could hide the gap.
func (j *journal) fail(err error) error {
	j.broken = fmt.Errorf("buffer journal %s: %w", filepath.Join(j.dir, journalName), err)
	return j.broken
}

// checkpoint makes everything committed to Badger durable and empties the
// journal. Callers hold off Badger writes that bypass the journal (dbMu).
func (j *journal) checkpoint() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken != nil {
		return j.broken
	}
	return j.checkpointLocked()
}

func (j *journal) checkpointLocked() error {
	start := time.Now()
	if err := j.syncStore(); err != nil {
		return j.fail(fmt.Errorf("checkpoint: %w", err))
	}
	gen := j.gen + 1
	if _, err := j.f.WriteAt(j.header(gen), 0); err != nil {
		return j.fail(err)
	}
	if err := fdatasync(j.f); err != nil {
		return j.fail(err)
	}
	j.gen, j.seq, j.off, j.page = gen, 0, journalData, j.page[:0]
	j.checkpoints.Add(1)
	j.log.Debug("buffer: journal checkpoint", "generation", gen, "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// syncStore fsyncs Badger's memtable logs, the value-log files written since
// the last checkpoint, and the directory. Tables are synced by Badger when
// it writes them, and its manifest on every change.
func (j *journal) syncStore() error {
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return err
	}
	var maxVlog uint64
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".mem"):
		case strings.HasSuffix(name, ".vlog"):
			fid, err := strconv.ParseUint(strings.TrimSuffix(name, ".vlog"), 10, 32)
			if err != nil {
				continue
			}
			maxVlog = max(maxVlog, fid)
			if fid < j.vlogSynced {
				continue
			}
		default:
			continue
		}
		if err := syncFile(filepath.Join(j.dir, name)); err != nil {
			return err
		}
	}
	if err := syncDir(j.dir); err != nil {
		return err
	}
	j.vlogSynced = maxVlog
	return nil
}

// syncFile fsyncs a file Badger may delete meanwhile (a memtable log once
// its table is written, a value-log file once collected).
func syncFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}

func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken == nil {
		j.broken = ErrClosed
	}
	return j.f.Close()
}
