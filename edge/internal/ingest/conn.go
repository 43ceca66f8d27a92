package ingest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"os"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// dial opens the broker connection the way paho's own dialer does (tcp and
// mqtt, ssl, tls and mqtts, ws and wss; an all_proxy from the environment
// for the TCP ones), and hands paho a connection read through a buffer.
// paho reads each packet straight from the connection, its fixed header a
// byte at a time: unbuffered, every message costs three or more read system
// calls, which the agent pays on its one core at thousands of messages a
// second.
func dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
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
			conn, err = tls.DialWithDialer(d, "tcp", uri.Host, o.TLSConfig)
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
		conn, err = proxy.FromEnvironmentUsing(d).Dial("tcp", uri.Host)
	default:
		err = errors.New("unknown protocol " + uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBuffer)}, nil
}

// readBuffer holds a few dozen typical telemetry messages; larger payloads
// are read through it in pieces.
const readBuffer = 8 << 10

// bufferedConn reads through r; everything else is the connection's.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
