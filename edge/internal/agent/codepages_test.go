package agent

import (
	"strings"
	"testing"
	"time"
)

func TestCodeReleaseConfig(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 10 * time.Second, time.Hour} {
		c := DefaultConfig()
		c.CodeRelease = d
		if err := c.Validate(); err != nil {
			t.Errorf("code_release_interval %v refused: %v", d, err)
		}
	}
	for _, d := range []time.Duration{-time.Second, 500 * time.Millisecond, 2 * time.Hour} {
		c := DefaultConfig()
		c.CodeRelease = d
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "code_release_interval") || !strings.Contains(err.Error(), "allowed") {
			t.Errorf("code_release_interval %v: %v, want an error naming the key and what is allowed", d, err)
		}
	}
}
