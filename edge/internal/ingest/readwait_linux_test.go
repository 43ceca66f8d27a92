package ingest

// TestReadWait is in a _linux file: Linux is where the agent runs and where
// CI runs it, and other kernels differ in when epoll reports a socket below
// its SO_RCVLOWAT low-water mark, which its timings depend on.

import (
	"bytes"
	"testing"
	"time"
)

// TestReadWait drives the gathering read on a real TCP connection: a
// message on an idle stream is read at once; on a busy one, a read waits
// for a buffer's worth of bytes or for the wait, whichever comes first, and
// then returns what arrived; and the stream, idle again, reads its next
// byte at once. The wait is long here so that the machine's scheduling
// delays cannot be mistaken for it.
func TestReadWait(t *testing.T) {
	const wait = 400 * time.Millisecond
	c, s := tcpPair(t, wait)
	if _, ok := c.(*waitConn); !ok {
		t.Fatalf("withReadWait returned %T, want *waitConn", c)
	}
	p := make([]byte, readBuffer)
	write := func(b []byte, after time.Duration) {
		go func() {
			time.Sleep(after)
			if _, err := s.Write(b); err != nil {
				t.Error(err)
			}
		}()
	}

	// Idle: a lone message is read as soon as it arrives.
	write([]byte("first"), 50*time.Millisecond)
	n, took := readTimed(t, c, p)
	if string(p[:n]) != "first" || took > wait/2 {
		t.Fatalf("idle stream: read %q after %v, want \"first\" well before %v", p[:n], took, wait)
	}

	// Busy (bytes were just read): a small message waits out the wait.
	write([]byte("second"), 50*time.Millisecond)
	n, took = readTimed(t, c, p)
	if string(p[:n]) != "second" || took < wait*3/4 {
		t.Fatalf("busy stream, few bytes: read %q after %v, want \"second\" after about %v", p[:n], took, wait)
	}

	// Busy: a full buffer's worth wakes the read before the wait is over.
	big := bytes.Repeat([]byte{'x'}, 2*readBuffer)
	write(big, 50*time.Millisecond)
	got := 0
	n, took = readTimed(t, c, p)
	got += n
	if n < readBuffer/2 || took > wait/2 {
		t.Fatalf("busy stream, many bytes: read %d bytes after %v, want at least %d well before %v", n, took, readBuffer/2, wait)
	}
	for got < len(big) {
		n, _ = readTimed(t, c, p)
		got += n
	}

	// Nothing more arrives: one wait passes, the stream is idle, and the
	// next byte is read at once.
	write([]byte("third"), wait+300*time.Millisecond)
	start := time.Now()
	n, _ = readTimed(t, c, p)
	if string(p[:n]) != "third" {
		t.Fatalf("read %q, want \"third\"", p[:n])
	}
	if late := time.Since(start) - (wait + 300*time.Millisecond); late > wait/2 {
		t.Fatalf("idle again: the byte was read %v after it was sent, want well under %v", late, wait)
	}
}
