package agent

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// threadPolicies returns the scheduling policy of every thread of the
// process, by thread id.
func threadPolicies(t *testing.T) map[int]uint32 {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]uint32{}
	for _, e := range tasks {
		tid, _ := strconv.Atoi(e.Name())
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // exited meanwhile
		}
		out[tid] = attr.Policy
	}
	return out
}

// newThreadPolicies holds n goroutines on threads of their own at once,
// which makes the runtime start threads beyond those in before, and returns
// the policies of those new threads.
func newThreadPolicies(before map[int]uint32, n int) []uint32 {
	var mu sync.Mutex
	var out []uint32
	var wg sync.WaitGroup
	hold := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			if _, old := before[unix.Gettid()]; !old {
				if a, err := unix.SchedGetAttr(0, 0); err == nil {
					mu.Lock()
					out = append(out, a.Policy)
					mu.Unlock()
				}
			}
			wg.Done()
			<-hold
		}()
	}
	wg.Wait()
	close(hold)
	return out
}

func TestSetCPUPolicy(t *testing.T) {
	t.Cleanup(func() {
		if err := setCPUPolicy(CPUPolicyNormal); err != nil {
			t.Error(err)
		}
	})
	// Nice values are per thread: this one's is raised, and the thread
	// exits with the test (its goroutine never unlocks it).
	runtime.LockOSThread()
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, 3); err != nil {
		t.Fatal(err)
	}
	niceBefore, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := setCPUPolicy(CPUPolicyBatch); err != nil {
		t.Fatal(err)
	}
	for tid, p := range threadPolicies(t) {
		if p != unix.SCHED_BATCH {
			t.Errorf("thread %d: policy %d after cpu_policy batch, want SCHED_BATCH (%d)", tid, p, unix.SCHED_BATCH)
		}
	}
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if attr.Nice != niceBefore.Nice {
		t.Errorf("nice %d after cpu_policy batch, was %d", attr.Nice, niceBefore.Nice)
	}
	// Threads the runtime starts later inherit the policy.
	later := newThreadPolicies(threadPolicies(t), 16)
	if len(later) == 0 {
		t.Fatal("no thread started for 16 goroutines locked to threads at once")
	}
	for _, p := range later {
		if p != unix.SCHED_BATCH {
			t.Errorf("a thread started after cpu_policy batch has policy %d, want SCHED_BATCH (%d)", p, unix.SCHED_BATCH)
		}
	}

	if err := setCPUPolicy(CPUPolicyNormal); err != nil {
		t.Fatal(err)
	}
	for tid, p := range threadPolicies(t) {
		if p != unix.SCHED_NORMAL {
			t.Errorf("thread %d: policy %d after cpu_policy normal, want SCHED_NORMAL (0)", tid, p)
		}
	}
	if err := setCPUPolicy("fifo"); err == nil {
		t.Error("cpu_policy fifo applied, want an error")
	}
}
