package decode

import (
	"errors"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// The data path reads Sparkplug payloads with protowire into reused
// structs instead of proto.Unmarshal into the generated types: the same
// wire rules (unknown and extension fields skipped, the last of a oneof
// wins), without allocating per metric, which is what lets a core decode
// millions of readings a second. The generated types in package sparkplug
// remain the reference the tests check this reader against.

// Field numbers of org.eclipse.tahu.protobuf.Payload and its Metric.
const (
	spfPayloadTimestamp = 1
	spfPayloadMetrics   = 2
	spfPayloadSeq       = 3
	spfMetricName       = 1
	spfMetricAlias      = 2
	spfMetricTimestamp  = 3
	spfMetricDatatype   = 4
	spfMetricIsNull     = 7
	spfMetricInt        = 10
	spfMetricLong       = 11
	spfMetricFloat      = 12
	spfMetricDouble     = 13
	spfMetricBoolean    = 14
	spfMetricString     = 15
	spfMetricBytes      = 16
	spfMetricExtension  = 19
)

type spWireMetric struct {
	name                           []byte
	alias, timestamp               uint64
	datatype                       uint32
	hasName, hasAlias, hasTS, null bool
	hasDatatype                    bool
	value                          protowire.Number // oneof field set; 0 none
	bits                           uint64           // int, long, bool, float or double bits
	str                            []byte
}

type spWirePayload struct {
	timestamp, seq uint64
	hasTS, hasSeq  bool
	metrics        []spWireMetric
}

var errSparkplugWire = errors.New("invalid protobuf encoding")

// parse reads b; the metrics' byte fields point into b.
func (p *spWirePayload) parse(b []byte) error {
	*p = spWirePayload{metrics: p.metrics[:0]}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errSparkplugWire
		}
		b = b[n:]
		switch {
		case num == spfPayloadTimestamp && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errSparkplugWire
			}
			p.timestamp, p.hasTS, b = v, true, b[n:]
			continue
		case num == spfPayloadSeq && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errSparkplugWire
			}
			p.seq, p.hasSeq, b = v, true, b[n:]
			continue
		case num == spfPayloadMetrics && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errSparkplugWire
			}
			p.metrics = append(p.metrics, spWireMetric{})
			if err := p.metrics[len(p.metrics)-1].parse(v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errSparkplugWire
		}
		b = b[n:]
	}
	return nil
}

func (m *spWireMetric) parse(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errSparkplugWire
		}
		b = b[n:]
		var (
			v  uint64
			bs []byte
		)
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(b)
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			bs, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errSparkplugWire
		}
		b = b[n:]
		switch {
		case num == spfMetricName && typ == protowire.BytesType:
			m.name, m.hasName = bs, true
		case num == spfMetricAlias && typ == protowire.VarintType:
			m.alias, m.hasAlias = v, true
		case num == spfMetricTimestamp && typ == protowire.VarintType:
			m.timestamp, m.hasTS = v, true
		case num == spfMetricDatatype && typ == protowire.VarintType:
			m.datatype, m.hasDatatype = uint32(v), true
		case num == spfMetricIsNull && typ == protowire.VarintType:
			m.null = v != 0
		case (num == spfMetricInt || num == spfMetricBoolean) && typ == protowire.VarintType:
			m.value, m.bits = num, v
			if num == spfMetricInt {
				m.bits = uint64(uint32(v))
			} else if v != 0 {
				m.bits = 1
			}
		case num == spfMetricLong && typ == protowire.VarintType,
			num == spfMetricFloat && typ == protowire.Fixed32Type,
			num == spfMetricDouble && typ == protowire.Fixed64Type:
			m.value, m.bits = num, v
		case num == spfMetricString && typ == protowire.BytesType:
			m.value, m.str = num, bs
		case num >= spfMetricBytes && num <= spfMetricExtension && typ == protowire.BytesType:
			m.value = num
		}
	}
	return nil
}

// float reads the metric's value as a number of Sparkplug type dt; ok is
// false for types that are not numbers, null values and text that is no
// number.
func (m *spWireMetric) float(dt uint32) (float64, bool) {
	if m.null || m.value == 0 {
		return 0, false
	}
	numeric := m.value >= spfMetricInt && m.value <= spfMetricBoolean
	switch dt {
	case spInt8, spInt16, spInt32, spInt64, spUInt8, spUInt16, spUInt32, spUInt64, spDateTime, spBoolean, spFloat, spDouble:
		if !numeric {
			return 0, false
		}
	}
	var f float64
	switch m.value {
	case spfMetricFloat:
		f = float64(math.Float32frombits(uint32(m.bits)))
	case spfMetricDouble:
		f = math.Float64frombits(m.bits)
	case spfMetricInt, spfMetricLong:
		f = float64(m.bits)
	case spfMetricString:
		if dt != spString && dt != spText {
			return 0, false
		}
		v, kind := parseNumericString(m.str)
		return v, kind == valueNumber
	}
	switch dt {
	case spInt8:
		return float64(int8(m.bits)), true
	case spInt16:
		return float64(int16(m.bits)), true
	case spInt32:
		return float64(int32(m.bits)), true
	case spInt64:
		return float64(int64(m.bits)), true
	case spUInt8, spUInt16, spUInt32, spUInt64, spDateTime:
		return float64(m.bits), true
	case spBoolean:
		if m.bits != 0 {
			return 1, true
		}
		return 0, true
	case spFloat, spDouble:
		return f, f == f && f-f == 0
	}
	return 0, false
}

// Sparkplug data types (DataType in sparkplug_b.proto).
const (
	spInt8     = 1
	spInt16    = 2
	spInt32    = 3
	spInt64    = 4
	spUInt8    = 5
	spUInt16   = 6
	spUInt32   = 7
	spUInt64   = 8
	spFloat    = 9
	spDouble   = 10
	spBoolean  = 11
	spString   = 12
	spDateTime = 13
	spText     = 14
)
