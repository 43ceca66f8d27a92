package buffer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// profile holds the Badger sizes of one memory profile. docs/buffer.md lists
// them with the memory they were measured to use.
type profile struct {
	memTableSize, baseTableSize, baseLevelSize int64
	numMemtables, numL0, numL0Stall            int
	numCompactors                              int
	blockCache, indexCache                     int64
	valueLogFileSize                           int64
	// valueThreshold: values at least this large go to the value log, the
	// rest stay in the LSM tree (see valueThresholdDevice).
	valueThreshold int64
	// tableSizeMultiplier 1 keeps every table, and so the table builder's
	// buffers, at baseTableSize on every level (Badger's default doubles it
	// per level: 16 MiB and 32 MiB builders appeared with a 1 GiB backlog).
	tableSizeMultiplier int
	// trimMappings pages out Badger's mapped files (trim_linux.go).
	trimMappings bool
	// compression is the default of Config.Compression.
	compression string
}

var profiles = map[string]profile{
	// A Raspberry Pi Zero 2 W has 512 MiB for everything. The sizes bound what
	// Badger allocates on the Go heap (docs/buffer.md, "Memory"):
	//   - chunks live in the value log (valueThresholdDevice), so the LSM
	//     tree holds pointers and small values: a few MiB for a 1 GiB backlog;
	//   - two 1 MiB memtables, each a 1.3 MiB arena;
	//   - level-0 tables are memtable-sized, and writes stall at 6 of them:
	//     when compaction falls behind, Badger merges level-0 tables into one
	//     (L0 to L0) in a builder that holds the whole result, so this bounds
	//     that builder to 6 MiB (with 8 MiB memtables and a stall at 10 it
	//     reached 62 MiB after a burst);
	//   - 128 KiB tables on the other levels: a builder's arena starts at
	//     twice that, and Badger pools up to 8 arenas;
	//   - 6 MiB of caches: the buffer reads each batch once, in order, so
	//     larger caches would not be hit anyway.
	ProfileDevice: {
		memTableSize: 1 << 20, numMemtables: 2,
		numL0: 4, numL0Stall: 6,
		baseTableSize: 128 << 10, baseLevelSize: 2 << 20, tableSizeMultiplier: 1,
		numCompactors: 2,
		blockCache:    4 << 20, indexCache: 2 << 20,
		valueLogFileSize: 4 << 20, valueThreshold: valueThresholdDevice,
		trimMappings: true,
		// Snappy would apply only to what stays in the tables, and
		// compaction then keeps uncompressed blocks and compressed copies
		// in its builders (docs/buffer.md, "Compression").
		compression: CompressionNone,
	},
	ProfileServer: {
		memTableSize: 64 << 20, numMemtables: 4,
		numL0: 5, numL0Stall: 15,
		baseTableSize: 8 << 20, baseLevelSize: 64 << 20,
		numCompactors: 4,
		blockCache:    64 << 20, indexCache: 32 << 20,
		valueLogFileSize: 64 << 20, valueThreshold: valueThresholdServer,
		compression: CompressionSnappy,
	},
}

// valueThresholdDevice puts chunks in the value log and keeps only their
// keys and value pointers in the LSM tree (key-value separation). The buffer
// is a queue: a chunk is written once, read once and dropped with its
// segment, so compacting it down the LSM levels (every level rewrites it,
// five times for a 1 GiB backlog) only cost CPU, memory and card wear. In the
// value log it is written once; dropping a segment leaves its value-log files
// without a live entry, and the value-log GC (collectValueLog) deletes each
// such file after reading its entry headers. Small values (seal records,
// state, dictionaries, short chunks) stay in the tree, where DropPrefix frees
// them directly. docs/buffer.md ("Where values live") has the measurements.
const valueThresholdDevice = 1 << 10

// valueThresholdServer keeps every value of the buffer (chunks up to
// maxChunkBytes, dead letters up to 64 KiB) inline in the LSM tree, where
// the server profile's Snappy compression applies to them (the value log is
// never compressed) and DropPrefix frees them without a value-log GC.
const valueThresholdServer = 256 << 10

// vlogDiscardRatio: a value-log file is collected once this share of it is
// dead. A queue's files die whole, oldest first; a file left partly live
// (one segment still referenced, by a dead letter not yet forwarded or the
// recent message keys) is rewritten only when little of it is still needed.
const vlogDiscardRatio = 0.75

// blockSize fits a whole chunk (maxChunkBytes and its key) in one table
// block. With Badger's 4 KiB default, a table builder grows the block a
// 32 KiB chunk lands in by doubling, 4 to 64 KiB, and its arena keeps every
// step: about four times the table's size per builder.
const blockSize = maxChunkBytes + 4<<10

func (c Config) badgerOptions(key []byte, log *slog.Logger) badger.Options {
	p := profiles[c.Profile]
	o := badger.DefaultOptions(c.Dir).
		WithLogger(badgerLogger{log}).
		WithSyncWrites(false). // the journal makes commits durable (journal.go)
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1).
		WithMetricsEnabled(false).
		WithMemTableSize(p.memTableSize).
		WithNumMemtables(p.numMemtables).
		WithNumLevelZeroTables(p.numL0).
		WithNumLevelZeroTablesStall(p.numL0Stall).
		WithBaseTableSize(p.baseTableSize).
		WithBaseLevelSize(p.baseLevelSize).
		WithNumCompactors(p.numCompactors).
		WithBlockCacheSize(p.blockCache).
		WithIndexCacheSize(p.indexCache).
		WithValueLogFileSize(p.valueLogFileSize).
		WithValueThreshold(p.valueThreshold).
		WithBlockSize(blockSize).
		WithNumGoroutines(2)
	compression := c.Compression
	if compression == "" {
		compression = p.compression
	}
	if compression == CompressionSnappy {
		o = o.WithCompression(options.Snappy)
	} else {
		o = o.WithCompression(options.None)
	}
	if p.tableSizeMultiplier > 0 {
		o.TableSizeMultiplier = p.tableSizeMultiplier
	}
	if key != nil {
		o = o.WithEncryptionKey(key)
	}
	return o
}

// badgerLogger sends Badger's log to slog. Badger logs every compaction and
// DropPrefix at INFO, which is debug detail for the agent.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.log.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Debugf(string, ...any) {}

// KeySize is the length of an encryption key file: AES-256.
const KeySize = 32

// readKeyFile reads a raw 32-byte key. "" means no encryption.
func readKeyFile(path string, log *slog.Logger) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("buffer.encryption_key_file: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: buffer.encryption_key_file %s holds %d bytes; it must hold exactly %d raw bytes "+
			"(create one with: head -c 32 /dev/urandom > %s; chmod 600 %s)", ErrEncryptionKey, path, len(key), KeySize, path, path)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("encryption key file is readable by other users; chmod 600 it", "file", path, "mode", fi.Mode().Perm().String())
	}
	return key, nil
}

// markerName is written into a buffer directory before Badger creates
// anything. It says the directory is an Updraft buffer and whether it is
// encrypted, so that a wrong configuration gets a precise error instead of
// Badger's generic one, and so that a directory holding anything else is
// never touched.
const markerName = "UPDRAFT-BUFFER.json"

type marker struct {
	Format    int  `json:"format"`
	Encrypted bool `json:"encrypted"`
	// KeyCheck is an HMAC of a fixed text under the key: it tells a wrong key
	// from the right one before Badger opens anything, and reveals nothing
	// about the key.
	KeyCheck string    `json:"key_check,omitempty"`
	Created  time.Time `json:"created"`
}

const markerFormat = 1

func keyCheck(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("updraft edge buffer key check v1"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// checkMarker creates the marker of a new buffer, or checks that the
// configuration fits the existing one. key is nil when not encrypted.
func checkMarker(dir, keyFile string, key []byte) error {
	encrypted := key != nil
	path := filepath.Join(dir, markerName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("open buffer %s: %w", dir, err)
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), markerName) {
				return fmt.Errorf("open buffer %s: %w: the directory is not empty and has no %s; "+
					"point buffer.dir at a new or empty directory", dir, ErrNotBuffer, markerName)
			}
		}
		m := marker{Format: markerFormat, Encrypted: encrypted, Created: time.Now().UTC()}
		if encrypted {
			m.KeyCheck = keyCheck(key)
		}
		return writeMarker(dir, m)
	}
	if err != nil {
		return fmt.Errorf("open buffer %s: %w", dir, err)
	}
	var m marker
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("open buffer %s: %w: %s: %v", dir, ErrNotBuffer, markerName, err)
	}
	if m.Format != markerFormat {
		return fmt.Errorf("open buffer %s: %w: format %d, this build reads format %d", dir, ErrNotBuffer, m.Format, markerFormat)
	}
	switch {
	case m.Encrypted && !encrypted:
		return fmt.Errorf("open buffer %s: %w: the buffer is encrypted at rest; set buffer.encryption_key_file "+
			"to the key file it was created with (nothing was changed on disk)", dir, ErrEncryptionKey)
	case !m.Encrypted && encrypted:
		return fmt.Errorf("open buffer %s: %w: the buffer was created without encryption; remove "+
			"buffer.encryption_key_file, or move the directory away to start a new, encrypted buffer (nothing was changed on disk)",
			dir, ErrEncryptionKey)
	case encrypted && m.KeyCheck != "" && !hmac.Equal([]byte(m.KeyCheck), []byte(keyCheck(key))):
		return wrongKey(dir, keyFile)
	}
	return nil
}

func wrongKey(dir, keyFile string) error {
	return fmt.Errorf("open buffer %s: %w: the key in %s is not the key the buffer was encrypted with; "+
		"use the original key file (nothing was changed on disk)", dir, ErrEncryptionKey, keyFile)
}

func writeMarker(dir string, m marker) error {
	data, _ := json.MarshalIndent(m, "", "  ")
	path := filepath.Join(dir, markerName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create buffer %s: %w", dir, err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("create buffer %s: write %s: %w", dir, markerName, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// openStore opens (or creates) the Badger database of a buffer directory.
func openStore(cfg Config, key []byte, log *slog.Logger) (*badger.DB, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", cfg.Dir, err)
	}
	if err := checkMarker(cfg.Dir, cfg.EncryptionKeyFile, key); err != nil {
		return nil, err
	}
	db, err := badger.Open(cfg.badgerOptions(key, log))
	if err != nil {
		// The marker's key check catches a wrong key first; this is the
		// backstop. Badger wraps the error without %w.
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) || strings.Contains(err.Error(), badger.ErrEncryptionKeyMismatch.Error()) {
			return nil, wrongKey(cfg.Dir, cfg.EncryptionKeyFile)
		}
		return nil, fmt.Errorf("open buffer %s: %w", cfg.Dir, err)
	}
	return db, nil
}

// dirSize is the space the directory's files take on disk (allocated blocks,
// so Badger's sparse, preallocated memtable files count for what they use).
func dirSize(dir string) (allocated, apparent int64, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		apparent += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			allocated += int64(st.Blocks) * 512
		} else {
			allocated += fi.Size()
		}
	}
	return allocated, apparent, nil
}
