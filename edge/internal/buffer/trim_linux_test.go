package buffer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

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
	m := mapFile(t, path, data)

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

// TestTrimMappingsKeepsHead: the end of what has been written of the newest
// value-log file, appended to at every commit, stays resident; the rest of
// it and older files are paged out. Names cross six digits, where the
// longer name is the newer.
func TestTrimMappingsKeepsHead(t *testing.T) {
	const size = 4 << 20
	// mapped maps a size-byte file of which the first written bytes hold
	// data (the rest is a hole, as in Badger's preallocated value-log
	// files) and reads it all.
	mapped := func(dir, name string, written int) []byte {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, make([]byte, written), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size); err != nil {
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
		t.Cleanup(func() { unix.Munmap(m) })
		var sum int
		for i := 0; i < written; i += 4096 {
			sum += int(m[i])
		}
		if sum != 0 {
			t.Fatalf("%s: read %d, want zeros", name, sum)
		}
		return m
	}
	// resident: the pages of m in this process's page tables (its Rss in
	// /proc/self/smaps); a paged-out file page may stay in the page cache.
	resident := func(m []byte) int {
		smaps, err := os.ReadFile("/proc/self/smaps")
		if err != nil {
			t.Fatal(err)
		}
		start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&m[0])))
		in := false
		for _, line := range strings.Split(string(smaps), "\n") {
			if strings.HasPrefix(line, start) {
				in = true
			} else if in && strings.HasPrefix(line, "Rss:") {
				kb, err := strconv.Atoi(strings.Fields(line)[1])
				if err != nil {
					t.Fatal(err)
				}
				return kb / 4
			}
		}
		t.Fatalf("mapping %s not in /proc/self/smaps", start)
		return 0
	}
	pages, keep := size/4096, trimHeadKeep/4096
	pass := func(dir string) {
		if _, err := trimMappings(dir); err == errTrimUnsupported {
			t.Skip("this kernel has no madvise(MADV_PAGEOUT), which needs Linux 5.4 or later")
		} else if err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	older, old, head := mapped(dir, "999998.vlog", size), mapped(dir, "999999.vlog", size), mapped(dir, "1000000.vlog", 3<<20)
	pass(dir)
	if n := resident(head); n < keep || n > keep+16 {
		t.Fatalf("newest value-log file, 3 MiB written: %d pages resident after a pass, want the last %d written", n, keep)
	}
	for name, m := range map[string][]byte{"999998.vlog": older, "999999.vlog": old} {
		if n := resident(m); n > pages/2 {
			t.Fatalf("%s: %d of %d pages still resident after a pass", name, n, pages)
		}
	}

	// A newest file with less than trimHeadKeep written stays whole.
	dir = t.TempDir()
	head = mapped(dir, "000002.vlog", trimHeadKeep/2)
	pass(dir)
	if n := resident(head); n != keep/2 {
		t.Fatalf("newest value-log file, %d bytes written: %d pages resident after a pass, want all %d", trimHeadKeep/2, n, keep/2)
	}
}

// mapFile writes data to path and maps it shared and read-only until the
// test ends.
func mapFile(t *testing.T, path string, data []byte) []byte {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	return m
}
