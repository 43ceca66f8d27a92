package natsserver

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// SyncInterval is how often JetStream fsyncs its file store: a positive
// duration, or SyncAlways to sync every write before it is acknowledged.
// YAML and flags accept "always" or a duration such as "1s".
type SyncInterval time.Duration

// SyncAlways makes every acknowledged message durable on disk: the publisher's
// ack then means the message survives a power loss, not only a crash.
const SyncAlways SyncInterval = -1

// ParseSyncInterval parses "always" or a positive duration.
func ParseSyncInterval(s string) (SyncInterval, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "always") {
		return SyncAlways, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("sync interval %q: want \"always\" or a positive duration such as 1s", s)
	}
	return SyncInterval(d), nil
}

// Always reports whether every write is synced.
func (s SyncInterval) Always() bool { return s == SyncAlways }

func (s SyncInterval) String() string {
	if s.Always() {
		return "always"
	}
	return time.Duration(s).String()
}

// Set implements flag.Value.
func (s *SyncInterval) Set(v string) error {
	p, err := ParseSyncInterval(v)
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *SyncInterval) UnmarshalYAML(n *yaml.Node) error {
	p, err := ParseSyncInterval(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = p
	return nil
}

// MarshalYAML renders the form UnmarshalYAML reads.
func (s SyncInterval) MarshalYAML() (any, error) { return s.String(), nil }
