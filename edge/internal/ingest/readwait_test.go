package ingest

import (
	"errors"
	"net"
	"os"
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
