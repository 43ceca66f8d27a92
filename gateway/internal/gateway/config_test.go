package gateway

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/updraft-io/updraft/gateway/internal/natsserver"
	"github.com/updraft-io/updraft/schemas/config"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		key string
		set func(c *Config)
	}{
		{"region", func(c *Config) { c.Region = "eu.west" }},
		{"region", func(c *Config) { c.Region = "" }},
		{"server_name", func(c *Config) { c.ServerName = "gw one" }},
		{"data_dir", func(c *Config) { c.DataDir = "" }},
		{"nats.listen", func(c *Config) { c.NATS.Listen = "4222" }},
		{"nats.listen", func(c *Config) { c.NATS.Listen = "127.0.0.1:70000" }},
		{"nats.monitor", func(c *Config) { c.NATS.Monitor = "localhost" }},
		{"nats.max_payload", func(c *Config) { c.NATS.MaxPayload = 128 << 20 }},
		{"jetstream.sync_interval", func(c *Config) { c.JetStream.SyncInterval = 0 }},
		{"streams.telemetry.name", func(c *Config) { c.Streams.Telemetry.Name = "TELE.METRY" }},
		{"streams.events.name", func(c *Config) { c.Streams.Events.Name = "TELEMETRY" }},
		{"streams.deadletter.name", func(c *Config) { c.Streams.DeadLetter.Name = "a/b" }},
		{"streams.telemetry.max_age", func(c *Config) { c.Streams.Telemetry.MaxAge = -time.Hour }},
		{"streams.telemetry.duplicates", func(c *Config) { c.Streams.Telemetry.Duplicates = 0 }},
		{"streams.events.duplicates", func(c *Config) { c.Streams.Events.MaxAge = time.Minute }},
		{"streams.telemetry.replicas", func(c *Config) { c.Streams.Telemetry.Replicas = 3 }},
		{"streams.deadletter.discard", func(c *Config) { c.Streams.DeadLetter.Discard = "oldest" }},
		{"http.addr", func(c *Config) { c.HTTP.Addr = "" }},
		{"streams.events.max_bytes", func(c *Config) {
			c.JetStream.MaxFile = 1 << 30
			c.Streams.Telemetry.MaxBytes = 1 << 30
			c.Streams.Events.MaxBytes = 1
		}},
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.set(&c)
		err := c.Validate()
		var cerr *config.Error
		if !errors.As(err, &cerr) || cerr.Key != tt.key {
			t.Errorf("want a config error for %s, got %v", tt.key, err)
			continue
		}
		if _, err := New(c, nil); err == nil {
			t.Errorf("New accepted a config with a bad %s", tt.key)
		}
	}
}

func TestLoadYAML(t *testing.T) {
	c := DefaultConfig()
	err := config.Load([]byte(`
region: eu
jetstream:
  sync_interval: 1s
  max_file: 10GiB
streams:
  telemetry:
    max_bytes: 1GiB
    discard: old
`), &c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Region != "eu" || c.JetStream.SyncInterval != natsserver.SyncInterval(time.Second) ||
		c.JetStream.MaxFile != 10<<30 || c.Streams.Telemetry.MaxBytes != 1<<30 || c.Streams.Telemetry.Discard != "old" ||
		c.Streams.Telemetry.Name != "TELEMETRY" {
		t.Errorf("loaded %+v", c)
	}
	n := c.NATSServer()
	if n.ServerName != "gw-eu-1" || n.Domain != "eu" {
		t.Errorf("server config %+v", n)
	}
	specs := c.Specs()
	if len(specs) != 3 || specs[0].Subjects[0] != "telemetry.eu.>" || specs[2].Subjects[0] != "deadletter.eu.>" {
		t.Errorf("specs %+v", specs)
	}

	if err := config.Load([]byte("jetstream:\n  sync_intervall: 1s\n"), &c); err == nil {
		t.Error("unknown key accepted")
	}
	if err := config.Load([]byte("jetstream:\n  sync_interval: sometimes\n"), &c); err == nil {
		t.Error("bad sync interval accepted")
	}
}

// TestLocalStackConfig keeps deploy/local/gateway.yaml valid and complete:
// it must load, validate and set every key that --help documents.
func TestLocalStackConfig(t *testing.T) {
	const path = "../../../deploy/local/gateway.yaml"
	c := DefaultConfig()
	if err := config.LoadFile(path, &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.NATS.Listen != "127.0.0.1:4222" || c.NATS.Monitor != "127.0.0.1:8222" || c.HTTP.Addr != "127.0.0.1:7420" || c.Region != "local" {
		t.Errorf("local stack addresses: %+v", c)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	have := yamlKeys(doc.Content[0], "")
	var help bytes.Buffer
	config.Describe(&help, DefaultConfig())
	var want []string
	for _, line := range strings.Split(strings.TrimSpace(help.String()), "\n") {
		// Fields of list entries (auth.edges[].user) are shown in comments:
		// the local stack's lists are empty.
		if k := strings.Fields(line)[0]; !strings.Contains(k, "[].") {
			want = append(want, k)
		}
	}
	slices.Sort(have)
	slices.Sort(want)
	if !slices.Equal(have, want) {
		t.Errorf("%s keys differ from the settings\nfile:     %v\nsettings: %v", path, have, want)
	}
}

// yamlKeys lists the dotted paths of the leaf keys of a mapping node.
func yamlKeys(n *yaml.Node, prefix string) []string {
	var out []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := prefix+n.Content[i].Value, n.Content[i+1]
		if val.Kind == yaml.MappingNode {
			out = append(out, yamlKeys(val, key+".")...)
		} else {
			out = append(out, key)
		}
	}
	return out
}
