package decode

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/config"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := testConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	sub := func(f func(*Subscription)) func(*Config) {
		return func(c *Config) { f(&c.Subscriptions[0]) }
	}
	tests := []struct {
		name   string
		change func(*Config)
		key    string
	}{
		{"no subscriptions", func(c *Config) { c.Subscriptions = nil }, "decode.subscriptions"},
		{"empty topic", sub(func(s *Subscription) { s.Topic = "" }), "decode.subscriptions[0].topic"},
		{"partial wildcard", sub(func(s *Subscription) { s.Topic = "devices/a+/telemetry" }), "decode.subscriptions[0].topic"},
		{"hash not last", sub(func(s *Subscription) { s.Topic = "devices/#/telemetry" }), "decode.subscriptions[0].topic"},
		{"empty template", sub(func(s *Subscription) { s.Template = "" }), "decode.subscriptions[0].template"},
		{"unknown placeholder", sub(func(s *Subscription) { s.Template = "devices/{dev}/telemetry" }), "decode.subscriptions[0].template"},
		{"partial placeholder", sub(func(s *Subscription) { s.Template = "devices/x{device}/telemetry" }), "decode.subscriptions[0].template"},
		{"placeholder twice", sub(func(s *Subscription) { s.Topic = "+/+"; s.Template = "{device}/{device}" }), "decode.subscriptions[0].template"},
		{"wildcard in template", sub(func(s *Subscription) { s.Template = "devices/+/telemetry" }), "decode.subscriptions[0].template"},
		{"template literal differs", sub(func(s *Subscription) { s.Template = "device/{device}/telemetry" }), "decode.subscriptions[0].template"},
		{"template longer", sub(func(s *Subscription) { s.Template = "devices/{device}/telemetry/x" }), "decode.subscriptions[0].template"},
		{"template shorter", sub(func(s *Subscription) { s.Template = "devices/{device}" }), "decode.subscriptions[0].template"},
		{"placeholder on a fixed level", sub(func(s *Subscription) { s.Template = "{site}/{device}/telemetry" }), "decode.subscriptions[0].template"},
		{"no device", sub(func(s *Subscription) { s.Template = "devices/x/telemetry" }), "decode.subscriptions[0].device"},
		{"device twice", sub(func(s *Subscription) { s.Device = "d1" }), "decode.subscriptions[0].device"},
		{"bad fixed device", sub(func(s *Subscription) { s.Template = "devices/x/telemetry"; s.Device = "d.1" }), "decode.subscriptions[0].device"},
		{"format", sub(func(s *Subscription) { s.Format = "csv" }), "decode.subscriptions[0].format"},
		{"timestamp unit", sub(func(s *Subscription) { s.TimestampUnit = "min" }), "decode.subscriptions[0].timestamp_unit"},
		{"bad unit metric", sub(func(s *Subscription) { s.Units["a.b"] = "x" }), "decode.subscriptions[0].units"},
		{"long unit", sub(func(s *Subscription) { s.Units["a"] = strings.Repeat("u", schemas.MaxTokenLen+1) }), "decode.subscriptions[0].units.a"},
		{"zero payload", func(c *Config) { c.MaxPayloadBytes = 0 }, "decode.max_payload_bytes"},
		{"huge payload", func(c *Config) { c.MaxPayloadBytes = 1 << 30 }, "decode.max_payload_bytes"},
		{"negative skew", func(c *Config) { c.MaxClockSkew = -time.Second }, "decode.max_clock_skew"},
		{"sparkplug with a template", sub(func(s *Subscription) { s.Format = FormatSparkplug; s.Topic = "spBv1.0/#" }), "decode.subscriptions[0].template"},
		{"sparkplug outside its namespace", sub(func(s *Subscription) { s.Format = FormatSparkplug; s.Template = "" }), "decode.subscriptions[0].topic"},
		{"homie without metric", sub(func(s *Subscription) { s.Format = FormatHomie }), "decode.subscriptions[0].template"},
		{"numeric without metric", sub(func(s *Subscription) { s.Format = FormatNumeric }), "decode.subscriptions[0].template"},
		{"senml with metric", sub(func(s *Subscription) {
			s.Format, s.Topic, s.Template = FormatSenML, "senml/+/+", "senml/{device}/{metric}"
		}), "decode.subscriptions[0].template"},
		{"arrays outside json", sub(func(s *Subscription) { s.Format, s.Arrays = FormatTasmota, true }), "decode.subscriptions[0].arrays"},
		{"metric template with separator", func(c *Config) {
			c.Subscriptions = append(c.Subscriptions, Subscription{Topic: "m/+/+", Template: "m/{device}/{metric}", Separator: "_"})
		}, "decode.subscriptions[1].template"},
		{"dotted separator", sub(func(s *Subscription) { s.Separator = "." }), "decode.subscriptions[0].separator"},
		{"second subscription", func(c *Config) {
			c.Subscriptions = append(c.Subscriptions, Subscription{Topic: "x", Template: "y", Device: "d"})
		},
			"decode.subscriptions[1].template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			var cerr *config.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Validate() = %v, want a *config.Error", err)
			}
			if cerr.Key != tt.key {
				t.Errorf("key %q, want %q (error: %v)", cerr.Key, tt.key, err)
			}
			if cerr.Allowed == "" {
				t.Errorf("error %v does not say what is allowed", err)
			}
			if _, err := New(cfg, testEdge, nil); err == nil {
				t.Error("New accepted an invalid configuration")
			}
		})
	}
}

func TestConfigAcceptsFilterShapes(t *testing.T) {
	for _, s := range []Subscription{
		{Topic: "#", Template: "a/{device}/b"},
		{Topic: "a/#", Template: "a", Device: "d"},
		{Topic: "a/#", Template: "a/{device}/{metric}"},
		{Topic: "+/+/+", Template: "{site}/{device}/{metric}"},
		{Topic: "plant/line1", Template: "plant/line1", Device: "line-1"},
	} {
		cfg := DefaultConfig()
		cfg.Subscriptions = []Subscription{s}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

func TestConfigLoadsFromYAML(t *testing.T) {
	var wrapper struct {
		Decode Config `yaml:"decode"`
	}
	wrapper.Decode = DefaultConfig()
	err := config.Load([]byte(`
decode:
  max_payload_bytes: 64KiB
  max_clock_skew: 30s
  subscriptions:
    - topic: plant/+/+
      template: plant/{device}/{metric}
      timestamp_unit: s
      units: {temperature: Cel}
`), &wrapper)
	if err != nil {
		t.Fatal(err)
	}
	cfg := wrapper.Decode
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxPayloadBytes != 64<<10 || cfg.MaxClockSkew != 30*time.Second || len(cfg.Subscriptions) != 1 {
		t.Fatalf("loaded %+v", cfg)
	}
	d, err := New(cfg, testEdge, func() time.Time { return testNow })
	if err != nil {
		t.Fatal(err)
	}
	out, err := d.Decode(nil, "plant/boiler/temperature", []byte(`{"value":80.5,"ts":1712314800}`))
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Unit != "Cel" || out[0].Device != "boiler" || out[0].TS != 1712314800e9 {
		t.Errorf("got %+v", out[0])
	}
}

func TestNewRejectsBadEdge(t *testing.T) {
	if _, err := New(DefaultConfig(), schemas.EdgeID{Region: "local", Site: "l.ab", Edge: "e"}, nil); !errors.Is(err, schemas.ErrBadToken) {
		t.Errorf("New with a bad edge id: %v, want ErrBadToken", err)
	}
}
