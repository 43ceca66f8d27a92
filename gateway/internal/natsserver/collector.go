package natsserver

import (
	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the server's own state at scrape time, so the figures
// are never stale and nothing polls between scrapes.
type Collector struct {
	server func() *server.Server

	streamMessages, streamBytes, streamConsumers *prometheus.Desc
	streamFirstSeq, streamLastSeq                *prometheus.Desc
	storeBytes, memoryBytes                      *prometheus.Desc
	apiRequests, apiErrors                       *prometheus.Desc
	connections, slowConsumers                   *prometheus.Desc
	inMsgs, outMsgs, inBytes, outBytes           *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector reads the server that srv returns at each scrape; while srv
// returns nil (not started yet, or stopped) it exports nothing.
func NewCollector(srv func() *server.Server) *Collector {
	const ns = "updraft_gateway_"
	stream := []string{"account", "stream"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(ns+name, help, labels, nil)
	}
	return &Collector{
		server:          srv,
		streamMessages:  d("stream_messages", "Messages held by the stream.", stream...),
		streamBytes:     d("stream_bytes", "Bytes held by the stream.", stream...),
		streamConsumers: d("stream_consumers", "Consumers of the stream.", stream...),
		streamFirstSeq:  d("stream_first_seq", "Sequence of the oldest message held by the stream.", stream...),
		streamLastSeq:   d("stream_last_seq", "Sequence of the newest message stored by the stream.", stream...),
		storeBytes:      d("jetstream_store_bytes", "Bytes of JetStream file storage in use."),
		memoryBytes:     d("jetstream_memory_bytes", "Bytes of JetStream memory storage in use."),
		apiRequests:     d("jetstream_api_requests_total", "JetStream API requests received."),
		apiErrors:       d("jetstream_api_errors_total", "JetStream API requests answered with an error."),
		connections:     d("connections", "Client connections open now."),
		slowConsumers:   d("slow_consumers_total", "Clients disconnected for being too slow to read."),
		inMsgs:          d("in_messages_total", "Messages received by the server."),
		outMsgs:         d("out_messages_total", "Messages sent by the server."),
		inBytes:         d("in_bytes_total", "Bytes received by the server."),
		outBytes:        d("out_bytes_total", "Bytes sent by the server."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.streamMessages, c.streamBytes, c.streamConsumers, c.streamFirstSeq, c.streamLastSeq,
		c.storeBytes, c.memoryBytes, c.apiRequests, c.apiErrors,
		c.connections, c.slowConsumers, c.inMsgs, c.outMsgs, c.inBytes, c.outBytes,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	srv := c.server()
	if srv == nil || !srv.Running() {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	if info, err := srv.Jsz(&server.JSzOptions{Streams: true}); err == nil && !info.Disabled {
		for _, s := range streamsOf(info) {
			gauge(c.streamMessages, float64(s.Messages), s.Account, s.Name)
			gauge(c.streamBytes, float64(s.Bytes), s.Account, s.Name)
			gauge(c.streamConsumers, float64(s.Consumers), s.Account, s.Name)
			gauge(c.streamFirstSeq, float64(s.FirstSeq), s.Account, s.Name)
			gauge(c.streamLastSeq, float64(s.LastSeq), s.Account, s.Name)
		}
		gauge(c.storeBytes, float64(info.Store))
		gauge(c.memoryBytes, float64(info.Memory))
		counter(c.apiRequests, float64(info.API.Total))
		counter(c.apiErrors, float64(info.API.Errors))
	}
	if v, err := srv.Varz(nil); err == nil {
		gauge(c.connections, float64(v.Connections))
		counter(c.slowConsumers, float64(v.SlowConsumers))
		counter(c.inMsgs, float64(v.InMsgs))
		counter(c.outMsgs, float64(v.OutMsgs))
		counter(c.inBytes, float64(v.InBytes))
		counter(c.outBytes, float64(v.OutBytes))
	}
}
