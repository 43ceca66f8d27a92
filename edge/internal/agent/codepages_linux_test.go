package agent

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestCodeSpans(t *testing.T) {
	const exe = "/usr/local/bin/updraft-edge"
	smaps := strings.Join([]string{
		"00400000-00c00000 r-xp 00000000 fd:00 1234 " + exe,
		"Size:               8192 kB",
		"Rss:                6000 kB",
		"Anonymous:             0 kB",
		"VmFlags: rd ex mr mw me dw",
		// relocated read-only data: written once, copied on write
		"00c00000-00e00000 r--p 00800000 fd:00 1234 " + exe,
		"Rss:                1000 kB",
		"Anonymous:             8 kB",
		"00e00000-00f00000 r--p 00a00000 fd:00 1234 " + exe,
		"Rss:                 500 kB",
		"Anonymous:             0 kB",
		"THPeligible:    0",
		// data and bss
		"00f00000-01000000 rw-p 00b00000 fd:00 1234 " + exe,
		"Rss:                 100 kB",
		"Anonymous:           100 kB",
		// nothing resident: nothing to release
		"01000000-01100000 r--p 00c00000 fd:00 1234 " + exe,
		"Rss:                   0 kB",
		"Anonymous:             0 kB",
		// shared mapping of the file, another file, anonymous memory
		"7f0000000000-7f0000100000 r--s 00000000 fd:00 1234 " + exe,
		"Rss:                  64 kB",
		"Anonymous:             0 kB",
		"7f0000100000-7f0000200000 r-xp 00000000 fd:00 99 /usr/lib/libc.so.6",
		"Rss:                 900 kB",
		"Anonymous:             0 kB",
		"7f0000200000-7f0000300000 rw-p 00000000 00:00 0",
		"Rss:                 900 kB",
		"Anonymous:           900 kB",
		// no Anonymous line: not known to be unwritten
		"01100000-01200000 r-xp 00d00000 fd:00 1234 " + exe,
		"Rss:                  64 kB",
		// a path with a space, as a replaced executable shows
		"7f0000300000-7f0000400000 r-xp 00000000 fd:00 1234 " + exe + " (deleted)",
		"Rss:                  32 kB",
		"Anonymous:             0 kB",
	}, "\n")
	got := codeSpans([]byte(smaps), exe)
	want := []codeSpan{{0x400000, 0xc00000, 6000 << 10}, {0xe00000, 0xf00000, 500 << 10}}
	if !slices.Equal(got, want) {
		t.Fatalf("codeSpans = %x, want %x", got, want)
	}
	if got := codeSpans([]byte(smaps+"\n"+strings.Repeat("x", 1<<17)), exe); got != nil {
		t.Fatalf("codeSpans of text that does not parse to the end = %x, want none", got)
	}
	got = codeSpans([]byte(smaps), exe+" (deleted)")
	want = []codeSpan{{0x7f0000300000, 0x7f0000400000, 32 << 10}}
	if !slices.Equal(got, want) {
		t.Fatalf("codeSpans of a replaced executable = %x, want %x", got, want)
	}
}

// exeRSS sums the resident kB of the test binary's private read-only
// mappings and of its writable ones.
func exeRSS(t *testing.T) (readOnly, writable int64) {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var perms string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && !strings.HasSuffix(f[0], ":") {
			perms = ""
			if strings.Join(f[5:], " ") == exe {
				perms = f[1]
			}
			continue
		}
		if perms != "" && len(f) == 3 && f[0] == "Rss:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if perms[1] == 'w' {
				writable += kb
			} else {
				readOnly += kb
			}
		}
	}
	return readOnly, writable
}

// TestReleaseCode releases the test binary's own code pages: its read-only
// resident size falls, and code and data still work afterwards.
func TestReleaseCode(t *testing.T) {
	ro0, _ := exeRSS(t)
	if ro0 == 0 {
		t.Fatal("no resident read-only mapping of the test binary in /proc/self/smaps")
	}
	n, err := releaseCode()
	if err != nil {
		t.Fatal(err)
	}
	ro1, _ := exeRSS(t)
	t.Logf("read-only resident %d kB before, %d kB after; %d kB released", ro0, ro1, n>>10)
	if n < ro0<<10/2 {
		t.Errorf("released %d kB of %d kB resident", n>>10, ro0)
	}
	if ro1 >= ro0 {
		t.Errorf("read-only resident size %d kB after the release, %d kB before", ro1, ro0)
	}
	// Code, read-only data (JSON reflection walks type tables) and
	// package-level variables are intact.
	var v struct {
		A []int           `json:"a"`
		B map[string]bool `json:"b"`
	}
	if err := json.Unmarshal([]byte(`{"a":[1,2,3],"b":{"x":true}}`), &v); err != nil || len(v.A) != 3 || !v.B["x"] {
		t.Fatalf("after the release: %v %+v", err, v)
	}
	if DefaultConfig().CodeRelease == 0 || DefaultConfig().Validate() != nil {
		t.Fatal("package data changed by the release")
	}
}
