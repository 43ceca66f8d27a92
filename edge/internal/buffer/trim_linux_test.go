package buffer

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTrimMappings maps a file in the buffer directory, reads it in, and
// checks that the resident size of file mappings shows it and that a pass
// pages it out without changing its contents.
func TestTrimMappings(t *testing.T) {
	dir := t.TempDir()
	const size = 16 << 20
	path := filepath.Join(dir, "000001.sst")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i / 4096)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)

	res, err := openResidentFiles()
	if err != nil {
		t.Fatal(err)
	}
	defer res.close()
	before, err := res.bytes()
	if err != nil {
		t.Fatal(err)
	}
	var sum int
	for i := 0; i < size; i += 4096 {
		sum += int(m[i])
	}
	touched, err := res.bytes()
	if err != nil {
		t.Fatal(err)
	}
	if want := size / 4096 / 256 * (255 * 256 / 2); sum != want { // each byte value 0-255 once per 256 pages
		t.Fatalf("read back a sum of %d, want %d", sum, want)
	}
	if touched-before < size/2 {
		t.Fatalf("resident file mappings grew by %d bytes after reading a %d-byte mapping", touched-before, size)
	}
	advised, err := trimMappings(dir)
	if err == errTrimUnsupported {
		t.Skip("this kernel has no madvise(MADV_PAGEOUT), which needs Linux 5.4 or later")
	}
	if err != nil {
		t.Fatal(err)
	}
	if advised < size {
		t.Fatalf("advised %d bytes, want at least the %d-byte mapping", advised, size)
	}
	after, err := res.bytes()
	if err != nil {
		t.Fatal(err)
	}
	if touched-after < size/2 {
		t.Fatalf("resident file mappings %d before paging out, %d after: the mapping stayed resident", touched, after)
	}
	for i := 0; i < size; i += 4096 {
		if m[i] != byte(i/4096) {
			t.Fatalf("byte %d is %d after paging out, want %d", i, m[i], byte(i/4096))
		}
	}
}
