package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// setCPUPolicy puts every thread of the process under SCHED_BATCH or
// SCHED_OTHER ("normal"); threads started later inherit it from the thread
// that starts them. Each thread's nice value is kept.
//
// Why batch: the agent sleeps until the broker writes a message to its
// socket. Under SCHED_OTHER the woken thread usually preempts the broker on
// its core at once, and each message that arrives while the agent sleeps
// costs two context switches and a broker interrupted mid-loop. A
// SCHED_BATCH thread is not allowed to preempt on wake-up: it runs on a free
// core, or when the running task's slice ends, so the broker keeps writing
// and the agent then reads more messages per wake-up. The agent still gets
// its fair share of CPU; only a wake-up's claim to run first is given up,
// which delays it by at most a scheduler slice while every core is busy
// (docs/operations.md, "CPU policy of the edge agent").
func setCPUPolicy(policy string) error {
	var want uint32
	switch policy {
	case CPUPolicyBatch:
		want = unix.SCHED_BATCH
	case CPUPolicyNormal:
		want = unix.SCHED_NORMAL
	default:
		return fmt.Errorf("cpu_policy %q: want %s or %s", policy, CPUPolicyBatch, CPUPolicyNormal)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			if errors.Is(err, unix.ESRCH) {
				continue // the thread has exited
			}
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
			continue
		}
		if attr.Policy == want {
			continue
		}
		if attr.Policy != unix.SCHED_NORMAL && attr.Policy != unix.SCHED_BATCH {
			continue // real-time or idle, set by the operator: leave it
		}
		attr.Policy = want
		attr.Flags &= unix.SCHED_FLAG_RESET_ON_FORK // nothing else is being set
		if err := unix.SchedSetAttr(tid, attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
		}
	}
	return errors.Join(errs...)
}
