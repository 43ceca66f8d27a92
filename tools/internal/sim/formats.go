package sim

import (
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// message is one publish: a device's sample in one of the formats, or a
// Sparkplug birth or Homie description around it.
type message struct {
	topic    string
	payload  []byte
	readings int // readings the agent decodes from it
}

// Sparkplug B: the simulator is an edge node per connection with the
// devices of that connection under it. Topics and payloads follow the
// Sparkplug 3.0 specification; payloads are encoded with protowire from
// the field numbers of org.eclipse.tahu.protobuf.Payload.
const (
	spGroup          = "updraft"
	spTypeDouble     = 10
	spTypeBoolean    = 11
	spTypeUInt64     = 8
	spRebirthMetric  = "Node Control/Rebirth"
	spBdSeqMetric    = "bdSeq"
	spPayloadTS      = 1
	spPayloadMetrics = 2
	spPayloadSeq     = 3
	spMetricName     = 1
	spMetricAlias    = 2
	spMetricType     = 4
	spMetricLong     = 11
	spMetricDouble   = 13
	spMetricBool     = 14
)

// spNode is the Sparkplug state of one connection's edge node.
type spNode struct {
	id      string
	seq     uint64 // of the next message, 0-255
	epoch   int    // counts NBIRTHs; devices born under an older one rebirth
	rebirth atomic.Bool
}

func spNodeID(conn int) string { return "node-" + strconv.Itoa(conn+1) }

func spTopic(typ, node, device string) string {
	t := "spBv1.0/" + spGroup + "/" + typ + "/" + node
	if device != "" {
		t += "/" + device
	}
	return t
}

func spMetric(b []byte, name string, alias uint64, datatype uint64, value func([]byte) []byte) []byte {
	var m []byte
	if name != "" {
		m = protowire.AppendTag(m, spMetricName, protowire.BytesType)
		m = protowire.AppendString(m, name)
	}
	if alias != 0 {
		m = protowire.AppendTag(m, spMetricAlias, protowire.VarintType)
		m = protowire.AppendVarint(m, alias)
	}
	if datatype != 0 {
		m = protowire.AppendTag(m, spMetricType, protowire.VarintType)
		m = protowire.AppendVarint(m, datatype)
	}
	m = value(m)
	b = protowire.AppendTag(b, spPayloadMetrics, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

func spDouble(v float64) func([]byte) []byte {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, spMetricDouble, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v))
	}
}

func spHeader(ts int64, seq uint64, withSeq bool) []byte {
	b := protowire.AppendTag(nil, spPayloadTS, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(ts))
	if withSeq {
		b = protowire.AppendTag(b, spPayloadSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, seq)
	}
	return b
}

func spBdSeq(b []byte) []byte {
	return spMetric(b, spBdSeqMetric, 0, spTypeUInt64, func(b []byte) []byte {
		b = protowire.AppendTag(b, spMetricLong, protowire.VarintType)
		return protowire.AppendVarint(b, 0)
	})
}

// spDeath is the node's NDEATH, registered as its MQTT will.
func spDeath(node string) (string, []byte) {
	return spTopic("NDEATH", node, ""), spBdSeq(spHeader(time.Now().UnixMilli(), 0, false))
}

func (n *spNode) nextSeq() uint64 {
	s := n.seq
	n.seq = (n.seq + 1) % 256
	return s
}

// sparkplug renders a sample as DDATA by alias, preceded by the births the
// node and device still owe.
func (s *signal) sparkplug(dst []message, d *device, node *spNode, ts int64) []message {
	if node.rebirth.Swap(false) || node.epoch == 0 {
		node.epoch++
		node.seq = 0
		b := spHeader(ts, node.nextSeq(), true)
		b = spBdSeq(b)
		b = spMetric(b, spRebirthMetric, 0, spTypeBoolean, func(b []byte) []byte {
			b = protowire.AppendTag(b, spMetricBool, protowire.VarintType)
			return protowire.AppendVarint(b, 0)
		})
		dst = append(dst, message{topic: spTopic("NBIRTH", node.id, ""), payload: b})
	}
	typ := "DDATA"
	birth := d.spEpoch != node.epoch
	if birth {
		typ = "DBIRTH"
		d.spEpoch = node.epoch
	}
	b := spHeader(ts, node.nextSeq(), true)
	for i := range s.metrics {
		name, datatype := "", uint64(0)
		if birth {
			name, datatype = s.metrics[i].Name, spTypeDouble
		}
		b = spMetric(b, name, uint64(i+1), datatype, spDouble(d.vals[i]))
	}
	return append(dst, message{topic: spTopic(typ, node.id, d.id), payload: b, readings: len(s.metrics)})
}

// messages renders the device's next sample in the configured format,
// applying the configured anomalies. conn is the connection that publishes
// it (its Sparkplug node).
func (s *signal) messages(dst []message, d *device, conn int, now time.Time) []message {
	ts := s.sample(d, now)
	a := &s.anomalies
	if a.Late > 0 && d.anomalies.Float64() < a.Late {
		ts -= a.LateBy.Milliseconds()
	}
	if a.Dropout > 0 && d.anomalies.Float64() < a.Dropout {
		return dst
	}
	start := len(dst)
	n := len(s.metrics)
	switch s.format {
	case FormatJSON:
		dst = append(dst, message{topic: d.topic, payload: s.renderJSON(d, ts), readings: n})
	case FormatSenML:
		b := make([]byte, 0, d.size+8)
		for i := range s.metrics {
			m := &s.metrics[i]
			if i == 0 {
				b = append(b, `[{"bt":`...)
				b = strconv.AppendInt(b, ts/1000, 10)
				b = append(b, '.')
				b = appendPadded(b, ts%1000)
				b = append(b, ',')
			} else {
				b = append(b, `,{`...)
			}
			b = append(b, `"n":`...)
			b = strconv.AppendQuote(b, m.Name)
			if m.Unit != "" {
				b = append(b, `,"u":`...)
				b = strconv.AppendQuote(b, m.Unit)
			}
			b = append(b, `,"v":`...)
			b = strconv.AppendFloat(b, d.vals[i], 'f', m.decimals, 64)
			b = append(b, '}')
		}
		b = append(b, ']')
		d.size = len(b)
		dst = append(dst, message{topic: d.topic, payload: b, readings: n})
	case FormatTasmota:
		b := make([]byte, 0, d.size+8)
		b = append(b, `{"Time":"`...)
		b = time.UnixMilli(ts).UTC().AppendFormat(b, "2006-01-02T15:04:05.000")
		b = append(b, `","SIM":{`...)
		for i := range s.metrics {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, s.metrics[i].key...)
			b = strconv.AppendFloat(b, d.vals[i], 'f', s.metrics[i].decimals, 64)
		}
		b = append(b, `},"TempUnit":"C"}`...)
		d.size = len(b)
		dst = append(dst, message{topic: d.topic, payload: b, readings: n})
	case FormatZigbee2MQTT:
		b := make([]byte, 0, d.size+8)
		b = append(b, '{')
		for i := range s.metrics {
			b = append(b, s.metrics[i].key...)
			b = strconv.AppendFloat(b, d.vals[i], 'f', s.metrics[i].decimals, 64)
			b = append(b, ',')
		}
		b = append(b, `"last_seen":`...)
		b = strconv.AppendInt(b, ts, 10)
		b = append(b, '}')
		d.size = len(b)
		dst = append(dst, message{topic: d.topic, payload: b, readings: n})
	case FormatHomie:
		if !d.described {
			d.described = true
			b := []byte(`{"homie":"5.0","version":1,"name":` + strconv.Quote(d.id) + `,"nodes":{"sensor":{"properties":{`)
			for i := range s.metrics {
				if i > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendQuote(b, s.metrics[i].Name)
				b = append(b, `:{"datatype":"float","unit":`...)
				b = strconv.AppendQuote(b, s.metrics[i].Unit)
				b = append(b, '}')
			}
			b = append(b, "}}}}"...)
			dst = append(dst, message{topic: d.topic + "/$description", payload: b})
		}
		for i := range s.metrics {
			dst = append(dst, message{topic: d.topic + "/sensor/" + s.metrics[i].Name,
				payload: strconv.AppendFloat(nil, d.vals[i], 'f', s.metrics[i].decimals, 64), readings: 1})
		}
	case FormatNumeric:
		for i := range s.metrics {
			dst = append(dst, message{topic: d.topic + "/" + s.metrics[i].Name,
				payload: strconv.AppendFloat(nil, d.vals[i], 'f', s.metrics[i].decimals, 64), readings: 1})
		}
	case FormatSparkplug:
		dst = s.sparkplug(dst, d, s.nodes[conn], ts)
	}
	if a.Malformed > 0 {
		for i := start; i < len(dst); i++ {
			if dst[i].readings > 0 && d.anomalies.Float64() < a.Malformed {
				dst[i].payload, dst[i].readings = corrupt(s.format, dst[i].payload), 0
			}
		}
	}
	if a.OutOfOrder > 0 && s.format != FormatSparkplug {
		// Sparkplug data is ordered by seq: holding it back would only be
		// a gap, which the anomalies of the broker link cover.
		if len(d.held) > 0 {
			dst = append(dst, d.held...)
			d.held = d.held[:0]
		} else if d.anomalies.Float64() < a.OutOfOrder {
			d.held = append(d.held, dst[start:]...)
			dst = dst[:start]
		}
	}
	return dst
}

// corrupt turns a payload into one the agent must dead-letter.
func corrupt(format string, p []byte) []byte {
	switch format {
	case FormatSparkplug:
		return append(p[:len(p):len(p)], 0xff, 0xff) // an invalid field tag
	case FormatHomie, FormatNumeric:
		return []byte("n/a")
	}
	return p[:len(p)/2] // cut JSON
}

func appendPadded(b []byte, ms int64) []byte {
	switch {
	case ms < 10:
		b = append(b, "00"...)
	case ms < 100:
		b = append(b, '0')
	}
	return strconv.AppendInt(b, ms, 10)
}
