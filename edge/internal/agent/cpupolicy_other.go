//go:build !linux

package agent

// setCPUPolicy does nothing outside Linux: cpu_policy is a Linux
// scheduling policy.
func setCPUPolicy(string) error { return nil }
