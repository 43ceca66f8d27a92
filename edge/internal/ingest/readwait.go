package ingest

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// waitConn is the broker's TCP connection with reads gathered under load.
//
// The agent runs on one core, and on a busy stream it was woken for every
// segment the broker sent: about one wake-up (an epoll_pwait return and a
// context switch) per two messages at 15,000 messages a second, a quarter of
// its CPU. Waiting in the agent before reading does not help: Go's poller
// keeps the socket registered, so every segment still wakes the thread
// blocked in epoll_pwait. SO_RCVLOWAT does: the kernel reports the socket
// readable only once lowat bytes are queued.
//
// So, while the stream is busy (the last read returned bytes less than wait
// ago), a read that finds the socket empty raises SO_RCVLOWAT to lowat and
// waits until lowat bytes have arrived or wait has passed, whichever comes
// first, then takes whatever is there. Once the stream falls idle (a wait
// ends with nothing queued) the low-water mark goes back to one byte, and
// the next message is read as soon as it arrives. A message is therefore
// handed to MQTT at most wait after it arrived, and only under load; the
// acknowledgement waits for the group commit in any case.
//
// Reads never wait past a read deadline set by the caller (paho sets one
// while it connects); with such a deadline set, reads are plain.
type waitConn struct {
	net.Conn
	raw   syscall.RawConn
	wait  time.Duration
	lowat int

	userDeadline atomic.Int64 // the caller's read deadline in Unix ns; 0: none
	last         time.Time    // when a read last returned bytes; only Read touches it
	raised       bool         // SO_RCVLOWAT is lowat, not 1; only Read touches it
}

// withReadWait wraps a TCP connection; anything else, or a wait of 0, is
// returned as it is. lowat is the buffer a read fills: waiting for more
// than it holds would gain nothing.
func withReadWait(c net.Conn, wait time.Duration, lowat int) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok || wait <= 0 {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	w := &waitConn{Conn: c, raw: raw, wait: wait, lowat: lowat}
	if w.setLowat(1) != nil {
		return c // no SO_RCVLOWAT on this platform
	}
	return w
}

func (c *waitConn) setLowat(n int) error {
	var serr error
	if err := c.raw.Control(func(fd uintptr) { serr = setRcvLowat(fd, n) }); err != nil {
		return err
	}
	return serr
}

// SetDeadline and SetReadDeadline record the caller's read deadline, which
// Read restores after each wait of its own.
func (c *waitConn) SetDeadline(t time.Time) error {
	c.userDeadline.Store(unixNano(t))
	return c.Conn.SetDeadline(t)
}

func (c *waitConn) SetReadDeadline(t time.Time) error {
	c.userDeadline.Store(unixNano(t))
	return c.Conn.SetReadDeadline(t)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (c *waitConn) Read(p []byte) (int, error) {
	if len(p) == 0 || c.userDeadline.Load() != 0 {
		return c.Conn.Read(p)
	}
	if n, err, ok := c.readNow(p); ok {
		return n, err
	}
	if time.Since(c.last) < c.wait {
		// Busy: let the kernel gather up to lowat bytes, for at most wait.
		if !c.raised {
			if c.setLowat(c.lowat) == nil {
				c.raised = true
			}
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.wait))
		n, err := c.Conn.Read(p)
		_ = c.Conn.SetReadDeadline(userTime(c.userDeadline.Load()))
		if n > 0 || err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return c.got(n, err)
		}
		if n, err, ok := c.readNow(p); ok {
			return n, err
		}
	}
	// Idle: the next byte is read as soon as it arrives.
	if c.raised {
		if err := c.setLowat(1); err != nil {
			return 0, err // reading on with the mark raised could wait for ever
		}
		c.raised = false
	}
	return c.got(c.Conn.Read(p))
}

// readNow reads what is queued without waiting; ok is false when nothing is.
func (c *waitConn) readNow(p []byte) (n int, err error, ok bool) {
	var rerr error
	var empty bool
	cerr := c.raw.Read(func(fd uintptr) bool {
		n, rerr, empty = readQueued(fd, p)
		return true
	})
	switch {
	case cerr != nil:
		return 0, cerr, true
	case empty:
		return 0, nil, false
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", rerr)}, true
	case n == 0:
		return 0, io.EOF, true
	}
	n, err = c.got(n, nil)
	return n, err, true
}

func (c *waitConn) got(n int, err error) (int, error) {
	if n > 0 {
		c.last = time.Now()
	}
	return n, err
}

func userTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
