package ingest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/updraft-io/updraft/schemas/config"
)

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key    string
		change func(*Config)
	}{
		{"mqtt.broker", func(c *Config) { c.Broker = "127.0.0.1:1883" }},
		{"mqtt.broker", func(c *Config) { c.Broker = "http://broker:1883" }},
		{"mqtt.keep_alive", func(c *Config) { c.KeepAlive = 500 * time.Millisecond }},
		{"mqtt.read_wait", func(c *Config) { c.ReadWait = -time.Millisecond }},
		{"mqtt.read_wait", func(c *Config) { c.ReadWait = 20 * time.Millisecond }},
		{"mqtt.cert_file", func(c *Config) { c.CertFile = "edge.pem" }},
	} {
		cfg := DefaultConfig()
		c.change(&cfg)
		err := cfg.Validate()
		var cerr *config.Error
		if !errors.As(err, &cerr) || cerr.Key != c.key {
			t.Errorf("%s: Validate = %v", c.key, err)
		}
	}
	cfg := DefaultConfig()
	if err := config.Load([]byte("read_wait: 0s\n"), &cfg); err != nil || cfg.ReadWait != 0 {
		t.Fatalf("read_wait: 0s loaded as %v (%v)", cfg.ReadWait, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("read_wait 0 (never wait) refused: %v", err)
	}
	var help strings.Builder
	config.Describe(&help, DefaultConfig())
	if !strings.Contains(help.String(), "  read_wait ") {
		t.Errorf("--help does not document read_wait:\n%s", help.String())
	}
}
