package decode

// Reason says why a message was rejected. The values are stable: they are
// Prometheus label values and dead-letter reasons that dashboards and replay
// tools match on.
type Reason string

// Reject reasons.
const (
	// ReasonUnmatchedTopic: the topic matches no subscription's template, or
	// its {site} level names another site than this edge's.
	ReasonUnmatchedTopic Reason = "unmatched_topic"
	// ReasonOversized: the payload is larger than max_payload_bytes.
	ReasonOversized Reason = "oversized"
	// ReasonMalformedJSON: the payload is not JSON (including invalid UTF-8,
	// nesting deeper than the decoder follows, and a field given twice).
	ReasonMalformedJSON Reason = "malformed_json"
	// ReasonNotAnObject: the payload is JSON but not an object where one is
	// required.
	ReasonNotAnObject Reason = "not_an_object"
	// ReasonNonNumeric: a value is a string that is not a number, an array,
	// an object or null. Booleans count as 0 and 1.
	ReasonNonNumeric Reason = "non_numeric"
	// ReasonNonFinite: a value is NaN or infinite, including a number too
	// large for a float64.
	ReasonNonFinite Reason = "non_finite"
	// ReasonBadTimestamp: the timestamp field is not a positive time in the
	// configured unit or an RFC 3339 string.
	ReasonBadTimestamp Reason = "bad_timestamp"
	// ReasonFutureTimestamp: the timestamp is later than now plus
	// max_clock_skew, which usually means a device clock is wrong.
	ReasonFutureTimestamp Reason = "future_timestamp"
	// ReasonBadToken: a device or metric name is not a valid subject token
	// (empty, too long, or holding a dot, space, wildcard, control character
	// or invalid UTF-8).
	ReasonBadToken Reason = "bad_token"
	// ReasonNoReadings: the message holds no value (e.g. an empty object).
	ReasonNoReadings Reason = "no_readings"
	// ReasonBadRecord: a SenML record breaks RFC 8428 (no name, no value,
	// two values, a must-understand field the decoder does not know).
	ReasonBadRecord Reason = "bad_record"
	// ReasonMalformedProtobuf: a Sparkplug payload is not a valid
	// org.eclipse.tahu.protobuf.Payload.
	ReasonMalformedProtobuf Reason = "malformed_protobuf"
	// ReasonUnknownAlias: Sparkplug data names a metric by an alias that no
	// birth certificate defined, or comes from a node or device the decoder
	// has seen no birth of (or has seen die); a rebirth is requested when
	// configured.
	ReasonUnknownAlias Reason = "unknown_alias"
)

// Reasons lists every reason, so a caller can create its per-reason metrics
// at zero before the first reject.
func Reasons() []Reason {
	return []Reason{
		ReasonUnmatchedTopic, ReasonOversized, ReasonMalformedJSON, ReasonNotAnObject, ReasonNonNumeric,
		ReasonNonFinite, ReasonBadTimestamp, ReasonFutureTimestamp, ReasonBadToken, ReasonNoReadings,
		ReasonBadRecord, ReasonMalformedProtobuf, ReasonUnknownAlias,
	}
}

// Reject is the error Decode returns for a message that cannot be ingested.
type Reject struct {
	Reason Reason
	// Detail says where and what, for people reading a dead letter; it is
	// not stable.
	Detail string
}

func (r *Reject) Error() string { return "reject message: " + string(r.Reason) + ": " + r.Detail }

func reject(reason Reason, detail string) *Reject { return &Reject{Reason: reason, Detail: detail} }
