package stack

import (
	"context"
	"fmt"
	"strings"
)

// Snapshot is the pipeline at one moment, from each component's status API.
type Snapshot struct {
	Published   float64 // readings the broker acknowledged to the simulator
	Buffered    float64 // readings durable at the edge, not yet acknowledged by JetStream
	StreamMsgs  float64 // batches in the regional TELEMETRY stream
	Forwarded   float64 // readings the edge had acknowledged by JetStream
	InLake      float64 // readings committed to the lake
	Rejected    float64 // messages dead-lettered at the edge
	Duplicates  float64 // batches the lake writer skipped as already committed
	LatencyP50  float64 // ms, reading time to lake commit
	LatencyP99  float64
	LatencyMax  float64
	Unreachable []string
}

// Paths of the fields used, in each component's /api/v1/status JSON.
var statusPaths = struct {
	simReadings, edgeBuffered, edgeForwarded, edgeRejected, gwMsgs, lakeRows, lakeDups, p50, p99, max string
}{
	simReadings:   "readings",
	edgeBuffered:  "buffer.buffered_readings",
	edgeForwarded: "forward.readings_sent",
	edgeRejected:  "mqtt.messages_rejected",
	gwMsgs:        "streams.TELEMETRY.messages",
	lakeRows:      "rows_committed",
	lakeDups:      "duplicates_skipped",
	p50:           "latency_ms.p50",
	p99:           "latency_ms.p99",
	max:           "latency_ms.max",
}

// Snapshot reads every running component's status.
func (s *Stack) Snapshot(ctx context.Context) Snapshot {
	var snap Snapshot
	read := func(name string) map[string]any {
		if s.Proc(name) == nil {
			return nil
		}
		var m map[string]any
		if err := GetJSON(ctx, s.URL(name)+"/api/v1/status", &m); err != nil {
			snap.Unreachable = append(snap.Unreachable, name)
			return nil
		}
		return m
	}
	p := statusPaths
	if m := read(Sim); m != nil {
		snap.Published = num(m, p.simReadings)
	}
	if m := read(Edge); m != nil {
		snap.Buffered, snap.Forwarded, snap.Rejected = num(m, p.edgeBuffered), num(m, p.edgeForwarded), num(m, p.edgeRejected)
	}
	if m := read(Gateway); m != nil {
		snap.StreamMsgs = num(m, p.gwMsgs)
	}
	if m := read(Cloud); m != nil {
		snap.InLake, snap.Duplicates = num(m, p.lakeRows), num(m, p.lakeDups)
		snap.LatencyP50, snap.LatencyP99, snap.LatencyMax = num(m, p.p50), num(m, p.p99), num(m, p.max)
	}
	return snap
}

// Line is the one-line live status of `task up`.
func (s Snapshot) Line() string {
	l := fmt.Sprintf("published %s | buffered at edge %s | forwarded %s | stream batches %s | in lake %s | dead-lettered %s",
		human(s.Published), human(s.Buffered), human(s.Forwarded), human(s.StreamMsgs), human(s.InLake), human(s.Rejected))
	if s.LatencyP50 > 0 {
		l += fmt.Sprintf(" | e2e p50 %.0fms p99 %.0fms", s.LatencyP50, s.LatencyP99)
	}
	if len(s.Unreachable) > 0 {
		l += " | unreachable: " + strings.Join(s.Unreachable, ",")
	}
	return l
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// num looks up a dotted path of numbers in decoded JSON; 0 when absent.
func num(m map[string]any, path string) float64 {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return 0
		}
		cur = mm[k]
	}
	f, _ := cur.(float64)
	return f
}
