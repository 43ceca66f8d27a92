package ingest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"os"
	"runtime"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// dial opens the broker connection the way paho's own dialer does (tcp and
// mqtt, ssl, tls and mqtts, ws and wss; an all_proxy from the environment
// for the TCP ones), and hands paho a bufferedConn. paho reads each packet
// straight from the connection, its fixed header a byte at a time:
// unbuffered, every message costs three or more read system calls, which
// the agent pays on its one core at thousands of messages a second. Under
// the buffer (and under TLS), a TCP connection gathers its reads for up to
// readWait while the stream is busy (waitConn).
func dial(uri *url.URL, o mqtt.ClientOptions, readWait time.Duration) (*bufferedConn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: 30 * time.Second}
	}
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri // the websocket dialer refuses user info in the URL
		u.User = nil
		var tc *tls.Config
		if uri.Scheme == "wss" {
			tc = o.TLSConfig
		}
		conn, err = mqtt.NewWebsocket(u.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "ssl", "tls", "mqtts":
		if os.Getenv("all_proxy") == "" {
			conn, err = dialTLS(d, uri.Host, o.TLSConfig, readWait)
			break
		}
		var raw net.Conn
		if raw, err = proxy.FromEnvironment().Dial("tcp", uri.Host); err != nil {
			break
		}
		tc := tls.Client(raw, o.TLSConfig)
		if err = tc.Handshake(); err != nil {
			_ = raw.Close()
			break
		}
		conn = tc
	case "tcp", "mqtt":
		if conn, err = proxy.FromEnvironmentUsing(d).Dial("tcp", uri.Host); err == nil {
			conn = withReadWait(conn, readWait, readBuffer)
		}
	default:
		err = errors.New("unknown protocol " + uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return newBufferedConn(conn), nil
}

// dialTLS is tls.DialWithDialer with the TCP connection under TLS gathering
// its reads: the same server name and handshake deadline.
func dialTLS(d *net.Dialer, addr string, cfg *tls.Config, readWait time.Duration) (net.Conn, error) {
	if d.Timeout != 0 {
		d2 := *d
		d2.Deadline = time.Now().Add(d.Timeout)
		if !d.Deadline.IsZero() && d.Deadline.Before(d2.Deadline) {
			d2.Deadline = d.Deadline
		}
		d = &d2
	}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(withReadWait(raw, readWait, readBuffer), cfg)
	if !d.Deadline.IsZero() {
		_ = tc.SetDeadline(d.Deadline)
	}
	if err := tc.Handshake(); err != nil {
		_ = raw.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// readBuffer holds a few dozen typical telemetry messages; larger payloads
// are read through it in pieces. maxPending bounds the bytes written but not
// yet sent; a write that reaches it sends them itself.
const (
	readBuffer = 8 << 10
	maxPending = 64 << 10
)

// bufferedConn reads through a buffer and coalesces writes. paho writes
// every packet with its own system call, and the agent acknowledges a
// whole group commit at once: one PUBACK per message, each a write, took a
// fifth of the agent's CPU at 14,000 messages a second. Writes are
// appended to pend and sent by flusher, which first yields so that the rest
// of the group's PUBACKs can join them. Bytes are sent in the order they
// were written; an error of a send is returned by the next Write, and the
// broker re-sends whatever it did not see acknowledged.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu     sync.Mutex // guards pend, err, closed
	pend   []byte
	err    error
	closed bool

	send  sync.Mutex // held while sending, so sends keep their order
	spare []byte     // pend's other buffer; only the sender touches it

	kick      chan struct{}
	stop      chan struct{}
	flushed   chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func newBufferedConn(conn net.Conn) *bufferedConn {
	c := &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBuffer),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), flushed: make(chan struct{})}
	go c.flusher()
	return c
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufferedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pend = append(c.pend, p...)
	full := len(c.pend) >= maxPending
	c.mu.Unlock()
	if full {
		if err := c.sendPending(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

// puback writes the PUBACK of the QoS 1 message id (MQTT 3.1.1, 3.4). The
// agent sends them itself, a group commit's worth at a time, rather than
// through paho, whose Ack hands each one to two goroutines in turn over
// unbuffered channels before it is written (docs/buffer.md, "Acknowledging
// the broker").
func (c *bufferedConn) puback(id uint16) error {
	ack := [4]byte{0x40, 2, byte(id >> 8), byte(id)}
	_, err := c.Write(ack[:])
	return err
}

// sendPending sends what has been written so far.
func (c *bufferedConn) sendPending() error {
	c.send.Lock()
	defer c.send.Unlock()
	c.mu.Lock()
	if len(c.pend) == 0 {
		c.mu.Unlock()
		return nil
	}
	buf := c.pend
	c.pend = c.spare[:0]
	c.mu.Unlock()
	_, err := c.Conn.Write(buf)
	c.spare = buf[:0]
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return err
}

func (c *bufferedConn) flusher() {
	defer close(c.flushed)
	for {
		select {
		case <-c.kick:
		case <-c.stop:
			return
		}
		runtime.Gosched()
		_ = c.sendPending()
	}
}

// Close sends what is pending (paho writes a DISCONNECT just before it
// closes), waiting at most a second for a broker that does not read, and
// closes the connection.
func (c *bufferedConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		<-c.flushed
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.sendPending()
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}
