package agent

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseCode takes the pages of the agent's own executable that were never
// written (its code and read-only data) out of the resident set, and returns
// how many resident bytes that covered. The agent's binary is about 26 MB;
// 15 MiB of it stayed resident, mostly code and tables that ran once at
// start (package initialisation, configuration, TLS and HTTP setup), while
// the code in use over 8 s was 4-7 MiB (docs/buffer.md, "Memory").
//
// MADV_DONTNEED on a private file mapping removes the process's page table
// entries; a page touched again is mapped back from the page cache (a minor
// fault), or read from the file if the kernel has evicted it meanwhile. That
// is only equal to the original for pages never written: the advice is given
// only for mappings of the executable that are neither writable nor hold a
// copied-on-write page (smaps "Anonymous: 0 kB"), which leaves out the data
// and bss segments and, in a position-independent or dynamically linked
// build, the relocated read-only data.
func releaseCode() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	var released int64
	for _, s := range codeSpans(smaps, exe) {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED); e != 0 {
			return released, e
		}
		released += s.rss
	}
	return released, nil
}

type codeSpan struct {
	start, end uintptr
	rss        int64 // bytes resident when smaps was read
}

// codeSpans parses /proc/self/smaps and returns the mappings of the file exe
// that releaseCode may advise: private, not writable, with resident pages and
// none copied on write. A mapping whose "Anonymous:" line is missing, or text
// that does not parse to the end, gives nothing: advising a page copied on
// write would lose what was written to it.
func codeSpans(smaps []byte, exe string) []codeSpan {
	var out []codeSpan
	var cur codeSpan
	ok, anon := false, int64(-1) // -1: no "Anonymous:" line seen yet
	flush := func() {
		if ok && anon == 0 && cur.rss > 0 {
			out = append(out, cur)
		}
		ok, anon = false, -1
	}
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") {
			// start-end perms offset dev inode [path]: a new mapping.
			flush()
			if len(f) < 6 {
				continue
			}
			start, end, found := strings.Cut(f[0], "-")
			s, err1 := strconv.ParseUint(start, 16, 64)
			e, err2 := strconv.ParseUint(end, 16, 64)
			perms := f[1]
			// The path is the rest of the line: it may hold spaces, and a
			// replaced executable is shown with " (deleted)" as readlink
			// shows it.
			path := strings.Join(f[5:], " ")
			ok = found && err1 == nil && err2 == nil && e > s && len(perms) == 4 &&
				perms[1] == '-' && perms[3] == 'p' && path == exe
			cur = codeSpan{start: uintptr(s), end: uintptr(e)}
			continue
		}
		if !ok || len(f) < 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			ok = false
			continue
		}
		switch f[0] {
		case "Rss:":
			cur.rss = kb << 10
		case "Anonymous:":
			anon = kb
		}
	}
	if sc.Err() != nil {
		return nil
	}
	flush()
	return out
}
