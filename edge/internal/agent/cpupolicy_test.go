package agent

import (
	"strings"
	"testing"
)

func TestCPUPolicyConfig(t *testing.T) {
	for _, p := range []string{CPUPolicyBatch, CPUPolicyNormal} {
		c := DefaultConfig()
		c.CPUPolicy = p
		if err := c.Validate(); err != nil {
			t.Errorf("cpu_policy %q refused: %v", p, err)
		}
	}
	for _, p := range []string{"", "BATCH", "idle", "fifo"} {
		c := DefaultConfig()
		c.CPUPolicy = p
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "cpu_policy") || !strings.Contains(err.Error(), "batch or normal") {
			t.Errorf("cpu_policy %q: %v, want an error naming the key and what is allowed", p, err)
		}
	}
}
