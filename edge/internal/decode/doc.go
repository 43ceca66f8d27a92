// Package decode turns the MQTT messages devices publish into readings, or
// into a Reject that says why a message cannot enter the pipeline.
//
// A Subscription pairs an MQTT topic filter with a topic template such as
// "devices/{device}/telemetry", whose placeholders ({device}, {metric},
// {site}) name the levels that identify the reading, and with a payload
// format: JSON (flat objects, or nested ones flattened with a separator,
// and arrays of samples), SenML (RFC 8428), Sparkplug B, Tasmota,
// Zigbee2MQTT, Homie v5 or a plain number. docs/payloads.md describes each.
// In the json format a flat object's numeric fields each become a reading
// (the field name is the metric), plus an optional timestamp field; when
// the template names the metric, the payload is a bare value or an object
// with a "value" field.
//
// A message is ingested whole or not at all: if any field of an otherwise
// good message is bad (a string that is not a number, NaN, an invalid metric
// name), the whole message is rejected so it can be dead-lettered and replayed
// once fixed, instead of storing part of a device's sample and losing the rest
// silently. The Reject's Reason is one of a fixed set of stable strings, used
// as a Prometheus label value and as the dead-letter reason.
//
// The JSON formats share a small hand-written scanner and Sparkplug is read
// with protowire: for a well-formed message of a known device no format
// allocates beyond growing the caller's slice, and device and metric names
// are interned so a million readings share a few dozen strings.
//
// Sparkplug B is stateful: births define the aliases that data messages
// use, seq numbers reveal lost messages, deaths mark nodes and devices
// offline. A Decoder is used from one goroutine, so this state needs no
// lock; rebirth requests leave through Config.OnCommand.
package decode
