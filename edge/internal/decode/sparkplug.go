package decode

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/updraft-io/updraft/edge/internal/decode/sparkplug"
	"github.com/updraft-io/updraft/schemas"
)

// Sparkplug B message types (topic spBv1.0/<group>/<type>/<node>[/<device>]).
const (
	spNamespace = "spBv1.0"
	spNBIRTH    = "NBIRTH"
	spNDEATH    = "NDEATH"
	spNDATA     = "NDATA"
	spDBIRTH    = "DBIRTH"
	spDDEATH    = "DDEATH"
	spDDATA     = "DDATA"
	spNCMD      = "NCMD"
	spDCMD      = "DCMD"

	// SparkplugRebirthMetric is the node control metric a host sets to ask
	// a node to publish its births again.
	SparkplugRebirthMetric = "Node Control/Rebirth"
)

// maxMillis is the last millisecond that fits int64 nanoseconds.
const maxMillis = uint64(1<<63-1) / 1e6

// maxSparkplugNodes bounds the nodes whose births are remembered.
const maxSparkplugNodes = 4096

// SparkplugStats counts what the Sparkplug decoder saw besides readings.
type SparkplugStats struct {
	// SeqGaps counts messages whose seq did not follow the previous one
	// of their node: messages were lost.
	SeqGaps uint64
	// RebirthRequests counts NCMD rebirth requests handed to OnCommand.
	RebirthRequests uint64
	// NonNumeric counts metrics skipped because their Sparkplug type is
	// not a number (String, Bytes, DataSet, Template, ...) or they are
	// null: the type says they are not measurements.
	NonNumeric uint64
}

type spMetric struct {
	name     metricName
	datatype uint32
	skip     bool // protocol metric (bdSeq, Node Control/...), not a reading
}

type spDevice struct {
	name    string
	aliases map[uint64]spMetric
	byName  map[string]spMetric
	online  bool
}

type spNode struct {
	name    string // device name of node-level readings
	aliases map[uint64]spMetric
	byName  map[string]spMetric
	bdSeq   int64
	seq     int // -1: unknown
	online  bool
	devices map[string]*spDevice
	// rebirthAsked: one request per node until its next NBIRTH.
	rebirthAsked bool
}

type spKey struct{ group, node string }

type sparkplugState struct {
	nodes   map[spKey]*spNode
	stats   SparkplugStats
	payload spWirePayload
}

func (s *sparkplugState) init() { s.nodes = map[spKey]*spNode{} }

// SparkplugStats returns the Sparkplug counters.
func (d *Decoder) SparkplugStats() SparkplugStats { return d.sp.stats }

// SparkplugOnline reports whether a Sparkplug node (group/node) or device
// (group/node/device) is online: born and not dead since. known is false
// when no birth of it was seen.
func (d *Decoder) SparkplugOnline(id string) (online, known bool) {
	group, rest, _ := strings.Cut(id, "/")
	node, device, isDevice := strings.Cut(rest, "/")
	n := d.sp.nodes[spKey{group, node}]
	if n == nil || n.name == "" {
		return false, false
	}
	if !isDevice {
		return n.online, true
	}
	dev := n.devices[device]
	if dev == nil {
		return false, false
	}
	return dev.online && n.online, true
}

func (d *Decoder) decodeSparkplug(dst []schemas.Reading, sub *subscription, topic string, payload []byte) ([]schemas.Reading, *Reject) {
	rest, ok := strings.CutPrefix(topic, spNamespace+"/")
	group, rest, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || group == "STATE" {
		return dst, nil // host application state, not node data
	}
	typ, rest, _ := strings.Cut(rest, "/")
	nodeID, deviceID, _ := strings.Cut(rest, "/")
	if nodeID == "" || strings.IndexByte(deviceID, '/') >= 0 {
		return dst, reject(ReasonUnmatchedTopic, "topic "+quote(topic)+" is not spBv1.0/<group>/<type>/<node>[/<device>]")
	}
	switch typ {
	case spNCMD, spDCMD:
		return dst, nil // commands to nodes, not data
	case spNBIRTH, spNDEATH, spNDATA:
		if deviceID != "" {
			return dst, reject(ReasonUnmatchedTopic, "topic "+quote(topic)+": "+typ+" has no device level")
		}
	case spDBIRTH, spDDEATH, spDDATA:
		if deviceID == "" {
			return dst, reject(ReasonUnmatchedTopic, "topic "+quote(topic)+": "+typ+" needs a device level")
		}
	default:
		return dst, reject(ReasonUnmatchedTopic, "topic "+quote(topic)+": unknown Sparkplug message type "+quote(typ))
	}
	p := &d.sp.payload
	if err := p.parse(payload); err != nil {
		return dst, reject(ReasonMalformedProtobuf, "not a Sparkplug B payload: "+err.Error())
	}
	node := d.sp.nodes[spKey{group, nodeID}]
	switch typ {
	case spNBIRTH:
		if node == nil || node.name == "" {
			name, err := d.internDevice(sanitizeName(nodeID))
			if err != nil {
				return dst, reject(ReasonBadToken, "topic "+quote(topic)+": "+err.Error())
			}
			if node == nil {
				if node = d.spNewNode(group, nodeID); node == nil {
					return dst, reject(ReasonUnknownAlias, fmt.Sprintf("more than %d Sparkplug nodes", maxSparkplugNodes))
				}
			}
			node.name = name
		}
		aliases, byName, rej := d.spBirth(sub, p)
		if rej != nil {
			return dst, rej
		}
		node.aliases, node.byName = aliases, byName
		node.devices = map[string]*spDevice{}
		node.online, node.rebirthAsked = true, false
		node.seq = -1
		node.bdSeq = -1
		for i := range p.metrics {
			if m := &p.metrics[i]; string(m.name) == "bdSeq" {
				node.bdSeq = int64(m.bits)
			}
		}
		d.spSeq(sub, group, nodeID, node, p)
		return d.spReadings(dst, p, node.name, node.aliases, node.byName)
	case spNDEATH:
		if node == nil {
			return dst, nil
		}
		// A death certificate from an earlier session (its bdSeq differs
		// from the current birth's) is stale: the will of a connection
		// that has since been replaced.
		for i := range p.metrics {
			if m := &p.metrics[i]; string(m.name) == "bdSeq" && node.bdSeq >= 0 && int64(m.bits) != node.bdSeq {
				return dst, nil
			}
		}
		node.online = false
		for _, dev := range node.devices {
			dev.online = false
		}
		return dst, nil
	}
	if node == nil || !node.online {
		if node == nil {
			// Remember the node unborn, so it is asked to rebirth once, not
			// once per message.
			node = d.spNewNode(group, nodeID)
		}
		d.spRebirth(sub, group, nodeID, node)
		return dst, reject(ReasonUnknownAlias, fmt.Sprintf("%s from Sparkplug node %s/%s before its NBIRTH", typ, group, nodeID))
	}
	d.spSeq(sub, group, nodeID, node, p)
	switch typ {
	case spNDATA:
		return d.spData(dst, sub, group, nodeID, node, p, node.name, node.aliases, node.byName)
	case spDBIRTH:
		dev := node.devices[deviceID]
		if dev == nil {
			if len(node.devices) >= maxInternedDevices {
				return dst, reject(ReasonUnknownAlias, "too many devices on Sparkplug node "+quote(group+"/"+nodeID))
			}
			name, err := d.internDevice(node.name + "/" + sanitizeName(deviceID))
			if err != nil {
				return dst, reject(ReasonBadToken, "topic "+quote(topic)+": "+err.Error())
			}
			dev = &spDevice{name: name}
			node.devices[strings.Clone(deviceID)] = dev
		}
		aliases, byName, rej := d.spBirth(sub, p)
		if rej != nil {
			return dst, rej
		}
		dev.aliases, dev.byName, dev.online = aliases, byName, true
		return d.spReadings(dst, p, dev.name, dev.aliases, dev.byName)
	case spDDEATH:
		if dev := node.devices[deviceID]; dev != nil {
			dev.online = false
		}
		return dst, nil
	}
	// DDATA
	dev := node.devices[deviceID]
	if dev == nil || !dev.online {
		d.spRebirth(sub, group, nodeID, node)
		return dst, reject(ReasonUnknownAlias, fmt.Sprintf("DDATA from Sparkplug device %s/%s/%s before its DBIRTH", group, nodeID, deviceID))
	}
	return d.spData(dst, sub, group, nodeID, node, p, dev.name, dev.aliases, dev.byName)
}

// spNewNode adds an unborn node; nil when the table is full.
func (d *Decoder) spNewNode(group, nodeID string) *spNode {
	if len(d.sp.nodes) >= maxSparkplugNodes {
		return nil
	}
	n := &spNode{seq: -1, bdSeq: -1}
	d.sp.nodes[spKey{strings.Clone(group), strings.Clone(nodeID)}] = n
	return n
}

// spBirth builds the alias and name maps of a birth certificate.
func (d *Decoder) spBirth(sub *subscription, p *spWirePayload) (map[uint64]spMetric, map[string]spMetric, *Reject) {
	aliases := make(map[uint64]spMetric, len(p.metrics))
	byName := make(map[string]spMetric, len(p.metrics))
	for i := range p.metrics {
		m := &p.metrics[i]
		if !m.hasName {
			return nil, nil, reject(ReasonUnknownAlias, fmt.Sprintf("birth metric %d has no name", i))
		}
		name := string(m.name)
		sm := spMetric{datatype: m.datatype}
		if name == "bdSeq" || strings.HasPrefix(name, "Node Control/") || strings.HasPrefix(name, "Device Control/") {
			sm.skip = true
		} else {
			mn, err := sub.internMetric(sanitizeName(name))
			if err != nil {
				return nil, nil, reject(ReasonBadToken, fmt.Sprintf("birth metric %s: %v", quote(name), err))
			}
			sm.name = mn
		}
		if m.hasAlias {
			if _, dup := aliases[m.alias]; dup {
				return nil, nil, reject(ReasonUnknownAlias, fmt.Sprintf("birth gives alias %d twice", m.alias))
			}
			aliases[m.alias] = sm
		}
		byName[name] = sm
	}
	return aliases, byName, nil
}

// spSeq checks that seq follows the node's previous message.
func (d *Decoder) spSeq(sub *subscription, group, nodeID string, node *spNode, p *spWirePayload) {
	if !p.hasSeq {
		return
	}
	seq := int(p.seq % 256)
	if node.seq >= 0 && seq != (node.seq+1)%256 {
		d.sp.stats.SeqGaps++
		d.spRebirth(sub, group, nodeID, node)
	}
	node.seq = seq
}

// spRebirth asks a node to publish its births again, once until they come.
func (d *Decoder) spRebirth(sub *subscription, group, nodeID string, node *spNode) {
	if !sub.rebirth || d.onCommand == nil || (node != nil && node.rebirthAsked) {
		return
	}
	if node != nil {
		node.rebirthAsked = true
	}
	d.sp.stats.RebirthRequests++
	d.onCommand(Command{Topic: SparkplugCommandTopic(group, nodeID), Payload: SparkplugRebirthPayload(d.now().UnixMilli())})
}

// SparkplugCommandTopic is the NCMD topic of a node.
func SparkplugCommandTopic(group, node string) string {
	return spNamespace + "/" + group + "/" + spNCMD + "/" + node
}

// SparkplugRebirthPayload is an NCMD payload setting Node Control/Rebirth.
func SparkplugRebirthPayload(nowMillis int64) []byte {
	b, _ := proto.Marshal(&sparkplug.Payload{
		Timestamp: proto.Uint64(uint64(nowMillis)),
		Metrics: []*sparkplug.Payload_Metric{{
			Name:     proto.String(SparkplugRebirthMetric),
			Datatype: proto.Uint32(uint32(sparkplug.DataType_Boolean)),
			Value:    &sparkplug.Payload_Metric_BooleanValue{BooleanValue: true},
		}},
	})
	return b
}

// spData resolves the aliases of NDATA or DDATA.
func (d *Decoder) spData(dst []schemas.Reading, sub *subscription, group, nodeID string, node *spNode, p *spWirePayload,
	device string, aliases map[uint64]spMetric, byName map[string]spMetric) ([]schemas.Reading, *Reject) {
	for i := range p.metrics {
		m := &p.metrics[i]
		if m.hasAlias {
			if _, ok := aliases[m.alias]; ok {
				continue
			}
			d.spRebirth(sub, group, nodeID, node)
			return dst, reject(ReasonUnknownAlias, fmt.Sprintf("alias %d of %s is in no birth certificate", m.alias, device))
		}
		if _, ok := byName[string(m.name)]; !ok {
			d.spRebirth(sub, group, nodeID, node)
			return dst, reject(ReasonUnknownAlias, fmt.Sprintf("metric %s of %s is in no birth certificate", quoteBytes(m.name), device))
		}
	}
	return d.spReadings(dst, p, device, aliases, byName)
}

// spReadings turns the numeric metrics of a payload into readings.
func (d *Decoder) spReadings(dst []schemas.Reading, p *spWirePayload, device string, aliases map[uint64]spMetric, byName map[string]spMetric) ([]schemas.Reading, *Reject) {
	start := len(dst)
	now := d.now().UnixNano()
	if p.hasTS && p.timestamp > maxMillis {
		return dst, reject(ReasonBadTimestamp, "payload timestamp is not milliseconds between 1970 and 2262")
	}
	base := now
	if p.hasTS {
		base = int64(p.timestamp) * 1e6
	}
	for i := range p.metrics {
		m := &p.metrics[i]
		var sm spMetric
		if m.hasAlias {
			sm = aliases[m.alias]
		} else {
			sm = byName[string(m.name)]
		}
		if sm.skip {
			continue
		}
		dt := sm.datatype
		if m.hasDatatype {
			dt = m.datatype
		}
		v, ok := m.float(dt)
		if !ok {
			d.sp.stats.NonNumeric++
			continue
		}
		ts := base
		if m.hasTS {
			if m.timestamp > maxMillis {
				return dst[:start], reject(ReasonBadTimestamp, fmt.Sprintf("metric %s: timestamp is not milliseconds between 1970 and 2262", sm.name.name))
			}
			ts = int64(m.timestamp) * 1e6
		}
		if ts <= 0 {
			return dst[:start], reject(ReasonBadTimestamp, fmt.Sprintf("metric %s: timestamp is not after 1970", sm.name.name))
		}
		if ts-now > d.skew {
			return dst[:start], reject(ReasonFutureTimestamp, fmt.Sprintf("timestamp %s is %s ahead of this edge's clock (decode.max_clock_skew is %s)",
				fmtTime(ts), fmtDuration(ts-now), fmtDuration(d.skew)))
		}
		r := d.reading(device, sm.name, v)
		r.TS = ts
		dst = append(dst, r)
	}
	return dst, nil
}
