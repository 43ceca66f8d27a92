package schemas_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
)

func TestValidateToken(t *testing.T) {
	long := strings.Repeat("a", schemas.MaxTokenLen)
	tests := []struct {
		name, v string
		ok      bool
		why     string // part of the error message
	}{
		{"plain", "edge-1", true, ""},
		{"underscore and digits", "sensor_42", true, ""},
		{"non-ASCII", "température", true, ""},
		{"longest", long, true, ""},
		{"empty", "", false, "empty"},
		{"too long", long + "a", false, "at most 128"},
		{"space", "a b", false, "whitespace"},
		{"dot", "a.b", false, "dot"},
		{"star", "a*", false, "wildcard"},
		{"greater-than", ">", false, "wildcard"},
		{"tab", "a\tb", false, "control"},
		{"newline", "a\n", false, "control"},
		{"NUL", "a\x00", false, "control"},
		{"DEL", "a\x7f", false, "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := schemas.ValidateToken("device", tt.v)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateToken(%q) = %v, want nil", tt.v, err)
				}
				return
			}
			if !errors.Is(err, schemas.ErrBadToken) {
				t.Fatalf("ValidateToken(%q) = %v, want ErrBadToken", tt.v, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "device") || !strings.Contains(msg, tt.why) {
				t.Errorf("error %q should name the token and say %q", msg, tt.why)
			}
			if tt.v != "" && !strings.Contains(msg, fmt.Sprintf("%q", tt.v)) {
				t.Errorf("error %q does not name the value %q", msg, tt.v)
			}
		})
	}
}

var lab = schemas.EdgeID{Region: "local", Site: "lab", Edge: "edge-1"}

func TestSubjects(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{schemas.RawSubject(lab), "telemetry.local.lab.edge-1.raw"},
		{schemas.AggSubject(lab), "telemetry.local.lab.edge-1.agg"},
		{schemas.TelemetrySubject(lab, schemas.KindRaw), "telemetry.local.lab.edge-1.raw"},
		{schemas.EventSubject(lab, "restart"), "events.local.lab.edge-1.restart"},
		{schemas.DeadLetterSubject(lab), "deadletter.local.lab.edge-1"},
		{schemas.RegionTelemetryFilter("local"), "telemetry.local.>"},
		{schemas.RegionEventFilter("local"), "events.local.>"},
		{schemas.RegionDeadLetterFilter("local"), "deadletter.local.>"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestParseSubjectRoundTrip(t *testing.T) {
	tests := []struct {
		subject string
		want    schemas.Subject
	}{
		{schemas.RawSubject(lab), schemas.Subject{Class: "telemetry", Edge: lab, Kind: schemas.KindRaw}},
		{schemas.AggSubject(lab), schemas.Subject{Class: "telemetry", Edge: lab, Kind: schemas.KindAgg}},
		{schemas.EventSubject(lab, "buffer_full"), schemas.Subject{Class: "events", Edge: lab, Kind: "buffer_full"}},
		{schemas.DeadLetterSubject(lab), schemas.Subject{Class: "deadletter", Edge: lab}},
	}
	for _, tt := range tests {
		got, err := schemas.ParseSubject(tt.subject)
		if err != nil {
			t.Errorf("ParseSubject(%q): %v", tt.subject, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseSubject(%q) = %+v, want %+v", tt.subject, got, tt.want)
		}
	}
}

func TestParseSubjectErrors(t *testing.T) {
	tests := []struct {
		subject string
		want    error
	}{
		{"", schemas.ErrBadSubject},
		{"telemetry.local.lab", schemas.ErrBadSubject},
		{"telemetry.local.lab.edge-1", schemas.ErrBadSubject},
		{"telemetry.local.lab.edge-1.raw.x", schemas.ErrBadSubject},
		{"telemetry.local.lab.edge-1.cooked", schemas.ErrBadSubject},
		{"metrics.local.lab.edge-1.raw", schemas.ErrBadSubject},
		{"events.local.lab.edge-1", schemas.ErrBadSubject},
		{"events.local.lab.edge-1.*", schemas.ErrBadToken},
		{"deadletter.local.lab.edge-1.raw", schemas.ErrBadSubject},
		{"telemetry..lab.edge-1.raw", schemas.ErrBadToken},
		{"telemetry.local.*.edge-1.raw", schemas.ErrBadToken},
		{"deadletter.local.lab.>", schemas.ErrBadToken},
	}
	for _, tt := range tests {
		if _, err := schemas.ParseSubject(tt.subject); !errors.Is(err, tt.want) {
			t.Errorf("ParseSubject(%q) = %v, want %v", tt.subject, err, tt.want)
		}
	}
}

func TestParseEdgeID(t *testing.T) {
	id, err := schemas.ParseEdgeID("local.lab.edge-1")
	if err != nil || id != lab {
		t.Fatalf("ParseEdgeID = %+v, %v", id, err)
	}
	if got := id.String(); got != "local.lab.edge-1" {
		t.Errorf("String() = %q", got)
	}
	for _, s := range []string{"", "local", "local.lab", "local.lab.edge-1.x", "local..edge-1", "local.lab.", ".lab.edge-1", "local.lab.edge 1", "a.b.c.", "local.l*b.edge-1"} {
		_, err := schemas.ParseEdgeID(s)
		if !errors.Is(err, schemas.ErrBadToken) {
			t.Errorf("ParseEdgeID(%q) = %v, want ErrBadToken", s, err)
		}
	}
	if err := (schemas.EdgeID{Region: "local", Site: "lab"}).Validate(); !errors.Is(err, schemas.ErrBadToken) {
		t.Errorf("Validate with no edge: %v", err)
	}
}

func TestReadingValidate(t *testing.T) {
	good := schemas.Reading{Region: "local", Site: "lab", Edge: "edge-1", Device: "d1", Metric: "temperature",
		TS: time.Date(2024, 4, 5, 11, 0, 0, 0, time.UTC).UnixNano(), Value: 21.5, Unit: "Cel"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := good.Time(); !got.Equal(time.Date(2024, 4, 5, 11, 0, 0, 0, time.UTC)) || got.Location() != time.UTC {
		t.Errorf("Time() = %v", got)
	}
	noUnit := good
	noUnit.Unit = ""
	if err := noUnit.Validate(); err != nil {
		t.Errorf("a reading without a unit: %v", err)
	}
	tests := []struct {
		name   string
		change func(*schemas.Reading)
		want   error
	}{
		{"region", func(r *schemas.Reading) { r.Region = "" }, schemas.ErrBadToken},
		{"site", func(r *schemas.Reading) { r.Site = "l.ab" }, schemas.ErrBadToken},
		{"edge", func(r *schemas.Reading) { r.Edge = "e*" }, schemas.ErrBadToken},
		{"device", func(r *schemas.Reading) { r.Device = "d 1" }, schemas.ErrBadToken},
		{"metric", func(r *schemas.Reading) { r.Metric = "" }, schemas.ErrBadToken},
		{"unit too long", func(r *schemas.Reading) { r.Unit = strings.Repeat("u", schemas.MaxTokenLen+1) }, schemas.ErrBadToken},
		{"NaN", func(r *schemas.Reading) { r.Value = math.NaN() }, schemas.ErrNonFinite},
		{"+Inf", func(r *schemas.Reading) { r.Value = math.Inf(1) }, schemas.ErrNonFinite},
		{"-Inf", func(r *schemas.Reading) { r.Value = math.Inf(-1) }, schemas.ErrNonFinite},
		{"zero time", func(r *schemas.Reading) { r.TS = 0 }, schemas.ErrBadTimestamp},
		{"negative time", func(r *schemas.Reading) { r.TS = -1 }, schemas.ErrBadTimestamp},
	}
	for _, tt := range tests {
		r := good
		tt.change(&r)
		if err := r.Validate(); !errors.Is(err, tt.want) {
			t.Errorf("%s: Validate() = %v, want %v", tt.name, err, tt.want)
		}
	}
}
