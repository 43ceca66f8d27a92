// Package decode turns the MQTT messages devices publish into readings, or
// into a Reject that says why a message cannot enter the pipeline.
//
// A Subscription pairs an MQTT topic filter with a topic template such as
// "devices/{device}/telemetry", whose placeholders ({device}, {metric},
// {site}) name the levels that identify the reading. The payload format is
// JSON: a flat object whose numeric fields each become a reading (the field
// name is the metric), plus an optional timestamp field. When the template
// names the metric, the payload is a bare value or an object with a "value"
// field.
//
// A message is ingested whole or not at all: if any field of an otherwise
// good message is bad (a string that is not a number, NaN, an invalid metric
// name), the whole message is rejected so it can be dead-lettered and replayed
// once fixed, instead of storing part of a device's sample and losing the rest
// silently. The Reject's Reason is one of a fixed set of stable strings, used
// as a Prometheus label value and as the dead-letter reason.
//
// The JSON path is a small hand-written scanner for flat objects: it does not
// allocate for a well-formed message beyond growing the caller's slice, and
// interns device and metric names so a million readings share a few dozen
// strings.
package decode
