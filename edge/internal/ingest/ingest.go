// Package ingest is where a reading enters the edge: an MQTT client with a
// persistent session that subscribes at QoS 1, decodes each message and hands
// its readings to the durable buffer. The message is acknowledged (PUBACK)
// only once the buffer says the readings are on disk, so the broker keeps, and
// re-sends, anything the agent has not made durable.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/updraft-io/updraft/edge/internal/buffer"
	"github.com/updraft-io/updraft/edge/internal/decode"
	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

// Config is the MQTT connection.
type Config struct {
	Broker       string        `yaml:"broker" help:"MQTT broker URL: tcp://host:1883, ssl://host:8883 or ws://host/mqtt"`
	ClientID     string        `yaml:"client_id" help:"MQTT client id; the persistent session is keyed by it (default updraft-<region>-<site>-<edge>)"`
	Username     string        `yaml:"username" help:"MQTT username"`
	PasswordFile string        `yaml:"password_file" help:"file holding the MQTT password"`
	KeepAlive    time.Duration `yaml:"keep_alive" help:"MQTT keep-alive interval"`
	ReadWait     time.Duration `yaml:"read_wait" help:"under load, how long a read from the broker may wait for more messages to arrive, to wake the agent less often (0 = never wait)"`
	CAFile       string        `yaml:"ca_file" help:"PEM CA bundle to verify an ssl:// broker"`
	CertFile     string        `yaml:"cert_file" help:"PEM client certificate for mutual TLS"`
	KeyFile      string        `yaml:"key_file" help:"PEM client key for mutual TLS"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Broker: "tcp://127.0.0.1:1883", KeepAlive: 30 * time.Second, ReadWait: time.Millisecond}
}

// Validate checks the settings; keys are reported under "mqtt.".
func (c Config) Validate() error {
	u, err := url.Parse(c.Broker)
	if err != nil || u.Host == "" {
		return config.Invalid("mqtt.broker", c.Broker, "a URL like tcp://127.0.0.1:1883 or ssl://broker:8883")
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return config.Invalid("mqtt.broker", c.Broker, "scheme tcp, mqtt, ssl, tls, mqtts, ws or wss")
	}
	if c.KeepAlive < time.Second {
		return config.Invalid("mqtt.keep_alive", c.KeepAlive, "at least 1s")
	}
	if c.ReadWait < 0 || c.ReadWait > 10*time.Millisecond {
		return config.Invalid("mqtt.read_wait", c.ReadWait, "0s to 10ms, e.g. 1ms")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return config.Invalid("mqtt.cert_file", c.CertFile, "set together with mqtt.key_file")
	}
	return nil
}

// Sink is the durable buffer as ingest sees it.
type Sink interface {
	AppendMessage(kind string, rs []schemas.Reading, m buffer.Message, done func(error))
	AppendDeadLetter(d buffer.DeadLetter, done func(error))
}

var _ Sink = (*buffer.Buffer)(nil)

// Ingest subscribes and feeds the buffer.
type Ingest struct {
	cfg    Config
	subs   []decode.Subscription
	dec    *decode.Decoder
	sink   Sink
	log    *slog.Logger
	client mqtt.Client
	store  sessionStore
	done   chan struct{} // closed when Run returns
	// conn is the connection paho dialled last, which the messages being
	// handled came in on: paho stops handling those of a lost connection
	// before it dials the next.
	conn atomic.Pointer[bufferedConn]

	connected atomic.Bool
	received  atomic.Uint64
	perMsg    atomic.Int32 // readings in the last message decoded, to size the next one's slice
	acked     atomic.Uint64
	readings  atomic.Uint64
	rejected  atomic.Uint64

	mMessages prometheus.Counter
	mReadings prometheus.Counter
	mRejected *prometheus.CounterVec
	mAcked    prometheus.Counter
	mConn     prometheus.Gauge
}

// New builds the MQTT ingest. The client id defaults to one derived from the
// edge id so that restarts resume the same persistent session.
func New(cfg Config, edge schemas.EdgeID, subs []decode.Subscription, dec *decode.Decoder, sink Sink, log *slog.Logger, reg prometheus.Registerer) (*Ingest, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "updraft-" + edge.Region + "-" + edge.Site + "-" + edge.Edge
	}
	in := &Ingest{cfg: cfg, subs: subs, dec: dec, sink: sink, log: log, store: newSessionStore(), done: make(chan struct{})}
	in.mMessages = prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_edge_mqtt_messages_total", Help: "MQTT messages received."})
	in.mReadings = prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_edge_readings_accepted_total", Help: "Readings decoded and handed to the buffer."})
	in.mRejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "updraft_edge_messages_rejected_total",
		Help: "MQTT messages dead-lettered, by reason."}, []string{"reason"})
	in.mAcked = prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_edge_mqtt_acked_total", Help: "MQTT messages acknowledged after being made durable."})
	in.mConn = prometheus.NewGauge(prometheus.GaugeOpts{Name: "updraft_edge_mqtt_connected", Help: "1 while connected to the MQTT broker."})
	if reg != nil {
		reg.MustRegister(in.mMessages, in.mReadings, in.mRejected, in.mAcked, in.mConn)
	}
	opts, err := in.clientOptions()
	if err != nil {
		return nil, err
	}
	in.client = mqtt.NewClient(opts)
	return in, nil
}

func (in *Ingest) clientOptions() (*mqtt.ClientOptions, error) {
	o := mqtt.NewClientOptions().
		AddBroker(in.cfg.Broker).
		SetClientID(in.cfg.ClientID).
		// A persistent session makes the broker queue QoS 1 messages while the
		// agent is down or reconnecting.
		SetCleanSession(false).
		SetStore(in.store).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetKeepAlive(in.cfg.KeepAlive).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		// With a persistent session the broker may deliver before Subscribe
		// runs; without a default handler those messages are never acked.
		SetDefaultPublishHandler(in.handle).
		SetOnConnectHandler(in.onConnect).
		SetCustomOpenConnectionFn(func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
			c, err := dial(uri, o, in.cfg.ReadWait)
			if err != nil {
				return nil, err
			}
			in.conn.Store(c)
			return c, nil
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			in.connected.Store(false)
			in.mConn.Set(0)
			in.log.Warn("mqtt connection lost", "broker", in.cfg.Broker, "err", err)
		})
	if in.cfg.Username != "" {
		o.SetUsername(in.cfg.Username)
	}
	if in.cfg.PasswordFile != "" {
		pw, err := os.ReadFile(in.cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read mqtt.password_file: %w", err)
		}
		o.SetPassword(strings.TrimRight(string(pw), "\r\n"))
	}
	tc, err := config.ClientTLS("mqtt", in.cfg.CAFile, in.cfg.CertFile, in.cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	return o, nil
}

func (in *Ingest) onConnect(c mqtt.Client) {
	// paho calls this on its connection goroutine; subscribing waits on
	// another one so that reading the broker's replies never waits on it.
	go in.subscribe(c)
}

// subscribe (re)subscribes after each connect, retrying while the
// connection stays up. It never gives up by disconnecting: a Disconnect
// would stop paho's automatic reconnection for good. There is no deadline
// on the SUBACK either: a broker resuming a persistent session first sends
// every message queued for it, and the SUBACK arrives behind them, possibly
// minutes later at the rate the buffer accepts them. Those messages are
// received meanwhile: the session's subscriptions still route them.
func (in *Ingest) subscribe(c mqtt.Client) {
	filters := make(map[string]byte, len(in.subs))
	for _, s := range in.subs {
		filters[s.Topic] = 1
	}
	delay := time.Second
	for {
		// No callback: every message goes to the default handler, in.handle.
		// A route would cost two topic splits per message, to pick the one
		// handler there is.
		tok := c.SubscribeMultiple(filters, nil)
		<-tok.Done() // paho fails it if the connection is lost
		err := tok.Error()
		if err == nil {
			for topic, code := range tok.(*mqtt.SubscribeToken).Result() {
				if code >= 0x80 {
					err = fmt.Errorf("broker refused the subscription to %q (return code %#x)", topic, code)
				}
			}
		}
		if err == nil {
			break
		}
		if !c.IsConnectionOpen() {
			return // the next connect subscribes again
		}
		in.log.Error("mqtt subscribe failed; retrying", "filters", filters, "err", err, "retry_in", delay)
		select {
		case <-time.After(delay):
		case <-in.done:
			return
		}
		delay = min(2*delay, time.Minute)
		if !c.IsConnectionOpen() {
			return
		}
	}
	if !c.IsConnectionOpen() {
		return // lost meanwhile: the next connect subscribes again
	}
	in.connected.Store(true)
	in.mConn.Set(1)
	in.log.Info("mqtt connected and subscribed", "broker", in.cfg.Broker, "client_id", in.cfg.ClientID, "filters", len(filters))
}

// handle runs on paho's router goroutine: it must return quickly, so the
// durable write completes asynchronously and acknowledges from its callback.
func (in *Ingest) handle(_ mqtt.Client, m mqtt.Message) {
	in.received.Add(1)
	in.mMessages.Inc()
	// The slice goes to the buffer with the message, so it is new each time;
	// sized like the last one, it is allocated once instead of grown.
	rs, err := in.dec.Decode(make([]schemas.Reading, 0, max(in.perMsg.Load(), 1)), m.Topic(), m.Payload())
	if err != nil {
		reason := "decode_error"
		var rej *decode.Reject
		if errors.As(err, &rej) {
			reason = string(rej.Reason)
		}
		in.rejected.Add(1)
		in.mRejected.WithLabelValues(reason).Inc()
		in.log.Debug("payload dead-lettered", "topic", m.Topic(), "reason", reason, "err", err)
		in.sink.AppendDeadLetter(buffer.DeadLetter{Topic: m.Topic(), Reason: reason, ReceivedAt: time.Now(), Payload: m.Payload()},
			in.acker(m))
		return
	}
	in.perMsg.Store(int32(min(len(rs), 1024)))
	in.readings.Add(uint64(len(rs)))
	in.mReadings.Add(float64(len(rs)))
	// The message key lets the buffer recognise a broker's re-delivery (DUP
	// flag set) of a message it already made durable before a crash cut
	// the PUBACK, instead of storing its readings twice (docs/buffer.md).
	msg := buffer.Message{Key: buffer.MessageKey(m.Topic(), m.MessageID(), m.Payload()), Dup: m.Duplicate()}
	in.sink.AppendMessage(schemas.KindRaw, rs, msg, in.acker(m))
}

// acker returns the callback that acknowledges m once the buffer made it
// durable. The PUBACK goes on the connection m came in on, written by the
// agent rather than by paho (bufferedConn.puback); if that connection is
// gone, so is the acknowledgement, and the broker sends m again in the
// resumed session, where the buffer recognises it.
func (in *Ingest) acker(m mqtt.Message) func(error) {
	c := in.conn.Load()
	return func(err error) {
		if err != nil {
			// Not acknowledged: the broker re-delivers it on the next session.
			if !errors.Is(err, context.Canceled) {
				in.log.Warn("message not made durable; leaving it unacknowledged", "topic", m.Topic(), "err", err)
			}
			return
		}
		switch {
		case m.Qos() == 0:
		case m.Qos() == 1 && c != nil:
			if c.puback(m.MessageID()) != nil {
				return // the connection is closed or broken
			}
		default:
			m.Ack() // QoS 2, above what the agent subscribes with: paho's handshake
		}
		in.acked.Add(1)
		in.mAcked.Inc()
	}
}

// Publish sends a command to a device (e.g. a Sparkplug rebirth request) at
// QoS 0 without waiting: it is called from the delivery goroutine, which
// must never block on the network.
func (in *Ingest) Publish(topic string, payload []byte) {
	in.client.Publish(topic, 0, false, payload)
}

// Stats is a snapshot for the status API.
type Stats struct {
	Connected bool   `json:"connected"`
	Broker    string `json:"broker"`
	Received  uint64 `json:"messages_received"`
	Acked     uint64 `json:"messages_acked"`
	Readings  uint64 `json:"readings_accepted"`
	Rejected  uint64 `json:"messages_rejected"`
}

// Stats returns counters since start.
func (in *Ingest) Stats() Stats {
	return Stats{Connected: in.connected.Load(), Broker: in.cfg.Broker, Received: in.received.Load(),
		Acked: in.acked.Load(), Readings: in.readings.Load(), Rejected: in.rejected.Load()}
}

// Connected reports whether the client is connected and subscribed.
func (in *Ingest) Connected() bool { return in.connected.Load() }

// Run connects (retrying until the broker is reachable) and stays connected
// until ctx ends.
func (in *Ingest) Run(ctx context.Context) error {
	in.log.Info("connecting to mqtt broker", "broker", in.cfg.Broker)
	defer close(in.done)
	in.client.Connect() // with ConnectRetry the token completes only once connected
	<-ctx.Done()
	// Disconnect without waiting for in-flight handlers to be acked: anything
	// not yet durable stays unacknowledged in the broker's session.
	in.client.Disconnect(250)
	in.connected.Store(false)
	in.mConn.Set(0)
	return nil
}
