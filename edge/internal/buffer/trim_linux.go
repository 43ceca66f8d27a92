package buffer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// trimMappings asks the kernel to page out the memory-mapped files of dir
// (Badger maps its tables and value logs; it writes every table through its
// mapping) and returns how many bytes of mappings it advised. Without it,
// every table Badger writes or the forwarder reads stays resident: a 1 GiB
// backlog shows as up to 1 GiB of resident memory, and mapped pages are the
// last the kernel evicts when a Raspberry Pi runs short.
//
// MADV_PAGEOUT never loses data, whatever the mapping: file pages are written
// back first, and should Badger unmap a file between the read of
// /proc/self/maps and the call, and something else be mapped at that
// address, the advice only moves that memory out (to swap if any), it does
// not discard it (MADV_DONTNEED on anonymous memory would zero it). The files
// being appended to are left alone where they are written: the write-ahead
// logs (.mem), and the last trimHeadKeep before the end of what has been
// written of the newest value-log file; paging those out would read a page
// back for each append, or for the live batch the forwarder reads next.
func trimMappings(dir string) (int64, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return 0, err
	}
	prefix := []byte(filepath.Clean(dir) + "/")
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	type mapping struct {
		start, end uintptr
		vlog       string
	}
	var maps []mapping
	head := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		line := sc.Bytes()
		fields := bytes.Fields(line)
		if len(fields) < 6 || !bytes.HasPrefix(fields[5], prefix) || bytes.HasSuffix(fields[5], []byte(".mem")) {
			continue
		}
		dash := bytes.IndexByte(fields[0], '-')
		if dash < 0 {
			continue
		}
		start, err1 := strconv.ParseUint(string(fields[0][:dash]), 16, 64)
		end, err2 := strconv.ParseUint(string(fields[0][dash+1:]), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		m := mapping{start: uintptr(start), end: uintptr(end)}
		if name := fields[5][len(prefix):]; bytes.HasSuffix(name, []byte(".vlog")) {
			// Badger names value-log files by a growing number, padded to
			// six digits: the longer name is the newer past 999999.
			m.vlog = string(name)
			if len(m.vlog) > len(head) || len(m.vlog) == len(head) && m.vlog > head {
				head = m.vlog
			}
		}
		maps = append(maps, m)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	var advised int64
	for _, m := range maps {
		if m.vlog != "" && m.vlog == head {
			m.end = behindHead(m.start, m.end)
			if m.end <= m.start {
				continue
			}
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_PAGEOUT); e != 0 {
			if e == unix.EINVAL {
				return advised, errTrimUnsupported // a kernel before 5.4
			}
			continue // unmapped meanwhile by Badger: nothing to release
		}
		advised += int64(m.end - m.start)
	}
	return advised, nil
}

// trimHeadKeep is how much of the newest value-log file stays resident
// behind the end of what has been written: Badger appends there at every
// commit, and the forwarder reads the live batches from there within a
// second or two. The rest of the file (it grows to ValueLogFileSize, 4 MiB
// in the device profile) is only read again for a backlog.
const trimHeadKeep = 1 << 20

// behindHead returns where paging out the mapping [start, end) of the
// newest value-log file must stop: trimHeadKeep before its last page in
// memory (mincore), which is the end of what has been written, since the
// file is appended to and never read past its end. It returns start when
// nothing can be paged out or mincore fails.
func behindHead(start, end uintptr) uintptr {
	ps := uintptr(os.Getpagesize())
	vec := make([]byte, (end-start+ps-1)/ps)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, start, end-start, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return start
	}
	last := -1
	for i := len(vec) - 1; i >= 0; i-- {
		if vec[i]&1 != 0 {
			last = i
			break
		}
	}
	if upto := start + uintptr(last+1)*ps; upto > start+trimHeadKeep {
		return (upto - trimHeadKeep) &^ (ps - 1)
	}
	return start
}

// residentFiles reads how much of the process's file mappings is resident
// (RssFile plus RssShmem): the third field of /proc/self/statm, in pages.
// The file stays open and is read again from offset 0 each time, which the
// kernel regenerates, with one pread: os.File.ReadAt would read again to
// see the end of the file. Each read costs microseconds on an idle system
// and 60-300 µs in a busy agent, against milliseconds for a pass of
// trimMappings.
type residentFiles struct {
	f   *os.File
	fd  int
	buf [128]byte
}

func openResidentFiles() (*residentFiles, error) {
	f, err := os.Open("/proc/self/statm")
	if err != nil {
		return nil, err
	}
	return &residentFiles{f: f, fd: int(f.Fd())}, nil
}

func (r *residentFiles) bytes() (int64, error) {
	n, err := unix.Pread(r.fd, r.buf[:], 0)
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/statm: %w", err)
	}
	fields := bytes.Fields(r.buf[:n])
	if len(fields) < 3 {
		return 0, fmt.Errorf("/proc/self/statm: unexpected %q", r.buf[:n])
	}
	pages, err := strconv.ParseInt(string(fields[2]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}

func (r *residentFiles) close() { r.f.Close() }

var errTrimUnsupported = errors.New("madvise(MADV_PAGEOUT) is not supported by this kernel")
