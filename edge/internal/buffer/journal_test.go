package buffer

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/updraft-io/updraft/schemas"
)

// copyDir copies the regular files of src into dst, all but skip.
func copyDir(t *testing.T, src, dst, skip string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == skip {
			continue
		}
		copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// frozen runs fn while no write can reach Badger or the journal.
func frozen(b *Buffer, fn func()) {
	b.dbMu.Lock()
	b.jr.mu.Lock()
	defer b.dbMu.Unlock()
	defer b.jr.mu.Unlock()
	fn()
}

// TestJournalRestoresLostCommits models a power cut that loses every Badger
// write since the last checkpoint but keeps what was fdatasynced: Badger's
// files as they were at a checkpoint, the journal as it was at the end. The
// buffer opened from them must hold exactly what the running one held.
func TestJournalRestoresLostCommits(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			cfg := testConfig(t)
			if encrypted {
				cfg.EncryptionKeyFile = writeKey(t, 32)
			}
			b := open(t, cfg)
			stop := start(t, b)
			appendWait(t, b, readings(0, 500)) // batches 1-5

			snap := t.TempDir()
			var gen uint64
			frozen(b, func() {
				if err := b.jr.checkpointLocked(); err != nil {
					t.Fatal(err)
				}
				gen = b.jr.gen
				copyDir(t, cfg.Dir, snap, journalName)
			})

			appendWait(t, b, readings(500, 700)) // batches 6-12
			for seq := uint64(1); seq <= 3; seq++ {
				if err := b.Ack(seq); err != nil {
					t.Fatal(err)
				}
			}
			want := b.Stats()
			frozen(b, func() {
				if b.jr.gen != gen {
					t.Fatalf("a checkpoint happened (generation %d, want %d): the snapshot is not what a power cut could leave", b.jr.gen, gen)
				}
				if b.jr.seq == 0 {
					t.Fatal("nothing was journaled after the snapshot")
				}
				copyFile(t, filepath.Join(cfg.Dir, journalName), filepath.Join(snap, journalName))
			})
			stop()

			cfg.Dir = snap
			b2 := open(t, cfg)
			start(t, b2)
			got := b2.Stats()
			if got.BufferedReadings != want.BufferedReadings || got.UnackedBatches != want.UnackedBatches || got.NextSeq != want.NextSeq {
				t.Fatalf("after replay: %d readings in %d batches, next sequence %d; the running buffer had %d in %d, next %d",
					got.BufferedReadings, got.UnackedBatches, got.NextSeq, want.BufferedReadings, want.UnackedBatches, want.NextSeq)
			}
			var rs []schemas.Reading
			for after := uint64(0); len(rs) < 900; {
				s := next(t, b2, after)
				if after == 0 && s.ID.Seq != 4 {
					t.Fatalf("first batch after replay is %d, want 4 (1-3 were acknowledged)", s.ID.Seq)
				}
				rs = append(rs, s.Readings...)
				after = s.ID.Seq
			}
			sameReadings(t, rs, readings(300, 900))
			noNext(t, b2, want.NextSeq-1, 50*time.Millisecond)
		})
	}
}

// TestJournalNothingReplayedAcrossDrop: once segments are dropped, no
// journal record older than the drop is left to write their keys again.
func TestJournalNothingReplayedAcrossDrop(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBytes = 1 << 20 // segments of 256 KiB
	b := open(t, cfg)
	stop := start(t, b)
	for i := 0; b.Stats().Segments < 4; i += 1000 {
		if i > 1_000_000 {
			t.Fatalf("%d readings did not fill three segments", i)
		}
		appendWait(t, b, readings(i, 1000))
	}
	if b.Stats().OpenReadings > 0 {
		next(t, b, b.Stats().NextSeq-1) // seals the open batch
	}
	if _, err := ackAll(b); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if st := b.Stats(); st.BufferedReadings != 0 || st.Segments > 1 {
			return fmt.Errorf("%d readings, %d segments", st.BufferedReadings, st.Segments)
		}
		return nil
	})
	// The journal as it is now, and Badger's files once closed: copied
	// while Badger runs, they could catch a compaction half done.
	snap := t.TempDir()
	frozen(b, func() { copyFile(t, filepath.Join(cfg.Dir, journalName), filepath.Join(snap, journalName)) })
	stop()
	copyDir(t, cfg.Dir, snap, journalName)

	cfg.Dir = snap
	b2 := open(t, cfg)
	if st := b2.Stats(); st.BufferedReadings != 0 || st.OpenReadings != 0 {
		t.Fatalf("reopened: %d readings (%d open); want none", st.BufferedReadings, st.OpenReadings)
	}
	// Run's first commit may move on to a new segment (the reopened one can
	// be full) and drops the old one, empty, at a later step: wait for it.
	start(t, b2)
	checkFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if st := b2.Stats(); st.BufferedReadings != 0 || st.Segments > 1 {
			return fmt.Errorf("reopened: %d readings in %d segments; want none, in one segment", st.BufferedReadings, st.Segments)
		}
		return nil
	})
}

// testJournal opens a Badger store without a Buffer, and its journal.
func testJournal(t *testing.T, dir string, key []byte) (*badger.DB, *journal, int, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	db, err := badger.Open(cfg.badgerOptions(key, discardLog()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	j, n, err := openJournal(dir, key, db, discardLog())
	if err == nil {
		t.Cleanup(func() { _ = j.close() })
	}
	return db, j, n, err
}

// journalOnly appends records without applying them to Badger: a crash
// between the journal's fdatasync and Badger's commit.
func journalOnly(t *testing.T, j *journal, ops ...[]byte) {
	t.Helper()
	for _, o := range ops {
		if err := j.commit(o, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

func dbGet(t *testing.T, db *badger.DB, k string) (string, bool) {
	t.Helper()
	var v []byte
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(k))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(v), true
}

func set(k, v string) []byte { return appendOp(nil, opSet, []byte(k), []byte(v)) }
func del(k string) []byte    { return appendOp(nil, opDelete, []byte(k), nil) }

func TestJournalReplay(t *testing.T) {
	dir := t.TempDir()
	db, j, n, err := testJournal(t, dir, nil)
	if err != nil || n != 0 {
		t.Fatalf("new journal: %d records replayed, %v", n, err)
	}
	journalOnly(t, j, set("a", "1"), append(set("b", "2"), set("c", "3")...), append(del("a"), set("b", "4")...))
	tail := j.off
	_ = j.close()

	_, j, n, err = testJournal2(t, db, dir, nil)
	if err != nil || n != 3 {
		t.Fatalf("replay: %d records, %v; want 3", n, err)
	}
	for k, want := range map[string]string{"b": "4", "c": "3"} {
		if v, ok := dbGet(t, db, k); !ok || v != want {
			t.Fatalf("%s = %q, %v; want %q", k, v, ok, want)
		}
	}
	if _, ok := dbGet(t, db, "a"); ok {
		t.Fatal("a was deleted by the third record")
	}

	// The records of the old generation are still in the file, past the
	// start of the new one; they are not replayed again.
	journalOnly(t, j, set("d", "5"), set("e", "6"))
	if j.off >= tail {
		t.Fatalf("test needs the new generation to end before the old one: %d >= %d", j.off, tail)
	}
	// Tear the last record: flip a byte of its value.
	buf := []byte{0}
	if _, err := j.f.ReadAt(buf, j.off-1); err != nil {
		t.Fatal(err)
	}
	buf[0] ^= 0xff
	if _, err := j.f.WriteAt(buf, j.off-1); err != nil {
		t.Fatal(err)
	}
	_ = j.close()
	_, j, n, err = testJournal2(t, db, dir, nil)
	if err != nil || n != 1 {
		t.Fatalf("replay of a torn tail: %d records, %v; want 1", n, err)
	}
	if v, ok := dbGet(t, db, "d"); !ok || v != "5" {
		t.Fatalf("d = %q, %v", v, ok)
	}
	if _, ok := dbGet(t, db, "e"); ok {
		t.Fatal("the torn record was applied")
	}
	_ = j.close()
	if _, _, n, err = testJournal2(t, db, dir, nil); err != nil || n != 0 {
		t.Fatalf("reopened after a checkpoint: %d records replayed, %v; want none", n, err)
	}
}

// testJournal2 reopens the journal of dir over an open db.
func testJournal2(t *testing.T, db *badger.DB, dir string, key []byte) (*badger.DB, *journal, int, error) {
	t.Helper()
	j, n, err := openJournal(dir, key, db, discardLog())
	if err == nil {
		t.Cleanup(func() { _ = j.close() })
	}
	return db, j, n, err
}

func TestJournalEncryption(t *testing.T) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	dir := t.TempDir()
	db, j, _, err := testJournal(t, dir, key)
	if err != nil {
		t.Fatal(err)
	}
	secret := "reading-value-that-must-not-leak"
	journalOnly(t, j, set("k", secret))
	_ = j.close()
	raw, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secret)) {
		t.Fatal("the journal holds a value in plain text")
	}

	other := make([]byte, 32)
	_, _ = rand.Read(other)
	for name, k := range map[string][]byte{"another key": other, "no key": nil} {
		if _, _, _, err := testJournal2(t, db, dir, k); !errors.Is(err, ErrEncryptionKey) {
			t.Fatalf("%s: %v; want %v", name, err, ErrEncryptionKey)
		}
	}
	if _, ok := dbGet(t, db, "k"); ok {
		t.Fatal("a refused journal was applied")
	}
	if _, _, n, err := testJournal2(t, db, dir, key); err != nil || n != 1 {
		t.Fatalf("the right key: %d records, %v", n, err)
	}
	if v, ok := dbGet(t, db, "k"); !ok || v != secret {
		t.Fatalf("k = %q, %v", v, ok)
	}
}

// TestJournalGrows: a record larger than the file makes room for itself.
func TestJournalGrows(t *testing.T) {
	dir := t.TempDir()
	db, j, _, err := testJournal(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var big []byte
	value := bytes.Repeat([]byte("x"), 100<<10)
	for i := range 90 {
		big = appendOp(big, opSet, fmt.Appendf(nil, "big-%d", i), value)
	}
	journalOnly(t, j, big, set("after", "1"))
	if j.size <= journalMinSize {
		t.Fatalf("journal of %d bytes holds a record of %d", j.size, len(big))
	}
	_ = j.close()
	if _, _, n, err := testJournal2(t, db, dir, nil); err != nil || n != 2 {
		t.Fatalf("replay: %d records, %v; want 2", n, err)
	}
	if v, ok := dbGet(t, db, "big-89"); !ok || v != string(value) {
		t.Fatalf("big-89: %d bytes, %v", len(v), ok)
	}
	if v, ok := dbGet(t, db, "after"); !ok || v != "1" {
		t.Fatalf("after = %q, %v", v, ok)
	}
}
