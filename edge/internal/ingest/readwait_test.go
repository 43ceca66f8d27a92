package ingest

import (
	"bytes"
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the client's read
// side gathering with the given wait.
func tcpPair(t *testing.T, wait time.Duration) (client net.Conn, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return withReadWait(c, wait, readBuffer), s
}

// readTimed reads once and says how long the read took.
func readTimed(t *testing.T, c net.Conn, p []byte) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	n, err := c.Read(p)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return n, time.Since(start)
}

// TestReadWait drives the gathering read on a real TCP connection: a
// message on an idle stream is read at once; on a busy one, a read waits
// for a buffer's worth of bytes or for the wait, whichever comes first, and
// then returns what arrived; and the stream, idle again, reads its next
// byte at once. The wait is long here so that the machine's scheduling
// delays cannot be mistaken for it.
func TestReadWait(t *testing.T) {
	if runtime.GOOS != "linux" {
		// Linux is where the agent runs and where CI runs this test; other
		// kernels differ in when epoll reports a socket below its low-water
		// mark, which the timings below depend on.
		t.Skipf("runs only with GOOS=linux (this is GOOS=%s): it times Linux's epoll wake-ups under SO_RCVLOWAT", runtime.GOOS)
	}
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

// TestReadWaitKeepsCallerDeadline checks that a read deadline the caller
// sets (paho sets one while it connects) is obeyed and not cleared by the
// read's own waits.
func TestReadWaitKeepsCallerDeadline(t *testing.T) {
	c, s := tcpPair(t, 200*time.Millisecond)
	p := make([]byte, 64)
	if _, err := s.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, took := readTimed(t, c, p); took > time.Second {
		t.Fatalf("first read took %v", took)
	}
	// Busy now; with a deadline of the caller's, nothing arrives.
	if err := c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.Read(p)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with the caller's deadline: %v, want a deadline error", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the caller's deadline of 100ms ended the read after %v", took)
	}
	// Cleared, reads wait for data again, and get it.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if n, _ := readTimed(t, c, p); string(p[:n]) != "b" {
		t.Fatalf("read %q, want \"b\"", p[:n])
	}
	// The peer closes: the read ends with EOF, not with a wait.
	s.Close()
	if _, err := c.Read(p); err == nil {
		t.Fatal("read after the peer closed: no error")
	}
}

// TestReadWaitOff leaves a connection as it is when the wait is 0.
func TestReadWaitOff(t *testing.T) {
	c, _ := tcpPair(t, 0)
	if _, ok := c.(*waitConn); ok {
		t.Fatal("a wait of 0 still wrapped the connection")
	}
}
