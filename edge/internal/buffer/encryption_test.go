package buffer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func writeKey(t *testing.T, n int) string {
	t.Helper()
	key := make([]byte, n)
	_, _ = rand.Read(key)
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dirHashes hashes every file of dir but Badger's LOCK file.
func dirHashes(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "LOCK" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(data)
	}
	return out
}

// plaintextOnDisk reports whether a device name appears in any file.
func plaintextOnDisk(t *testing.T, dir string) bool {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if bytes.Contains(data, []byte("dev-")) {
			return true
		}
	}
	return false
}

func TestEncryption(t *testing.T) {
	cfg := testConfig(t)
	cfg.EncryptionKeyFile = writeKey(t, KeySize)
	b := open(t, cfg)
	stop := start(t, b)
	appendWait(t, b, readings(0, 250))
	want := []Sealed{next(t, b, 0), next(t, b, 1)}
	stop()
	if plaintextOnDisk(t, cfg.Dir) {
		t.Fatal("an encrypted buffer holds a device name in plain text")
	}
	before := dirHashes(t, cfg.Dir)

	wrong := cfg
	wrong.EncryptionKeyFile = writeKey(t, KeySize)
	none := cfg
	none.EncryptionKeyFile = ""
	for name, c := range map[string]struct {
		cfg  Config
		says []string
	}{
		"no key":    {none, []string{"encrypted", "buffer.encryption_key_file", "nothing was changed"}},
		"wrong key": {wrong, []string{wrong.EncryptionKeyFile, "not the key", "nothing was changed"}},
	} {
		_, err := Open(c.cfg, testEdge, nil, nil)
		if !errors.Is(err, ErrEncryptionKey) {
			t.Fatalf("%s: Open = %v, want ErrEncryptionKey", name, err)
		}
		for _, s := range c.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not say %q", name, err, s)
			}
		}
	}
	after := dirHashes(t, cfg.Dir)
	for name, h := range before {
		if after[name] != h {
			t.Errorf("refused open changed %s", name)
		}
	}

	// The right key still reads everything.
	b = open(t, cfg)
	start(t, b)
	for _, w := range want {
		got := next(t, b, w.ID.Seq-1)
		if got.ID != w.ID {
			t.Fatalf("batch %v, want %v", got.ID, w.ID)
		}
		sameReadings(t, got.Readings, w.Readings)
	}
	got := next(t, b, 2) // the recovered open batch
	sameReadings(t, got.Readings, readings(200, 50))
}

func TestUnencryptedBufferRefusesKey(t *testing.T) {
	cfg := testConfig(t)
	b := open(t, cfg)
	stop := start(t, b)
	appendWait(t, b, readings(0, 100))
	stop()
	if !plaintextOnDisk(t, cfg.Dir) {
		t.Fatal("plain-text check is blind: an unencrypted buffer should show device names")
	}
	cfg.EncryptionKeyFile = writeKey(t, KeySize)
	_, err := Open(cfg, testEdge, nil, nil)
	if !errors.Is(err, ErrEncryptionKey) || !strings.Contains(err.Error(), "created without encryption") {
		t.Fatalf("Open = %v", err)
	}
}

func TestKeyFileLength(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		cfg := testConfig(t)
		cfg.EncryptionKeyFile = writeKey(t, n)
		_, err := Open(cfg, testEdge, nil, nil)
		if !errors.Is(err, ErrEncryptionKey) {
			t.Fatalf("%d-byte key: Open = %v", n, err)
		}
		for _, s := range []string{cfg.EncryptionKeyFile, "holds " + strconv.Itoa(n) + " bytes", "exactly 32", "head -c 32 /dev/urandom"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%d-byte key: error %q does not say %q", n, err, s)
			}
		}
		if entries, _ := os.ReadDir(cfg.Dir); len(entries) != 0 {
			t.Errorf("%d-byte key: buffer directory was created: %v", n, entries)
		}
	}
	cfg := testConfig(t)
	cfg.EncryptionKeyFile = filepath.Join(t.TempDir(), "missing")
	if _, err := Open(cfg, testEdge, nil, nil); err == nil || !strings.Contains(err.Error(), "buffer.encryption_key_file") {
		t.Fatalf("missing key file: %v", err)
	}
}
