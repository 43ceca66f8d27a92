package agent

// The values of cpu_policy.
const (
	CPUPolicyBatch  = "batch"
	CPUPolicyNormal = "normal"
)
