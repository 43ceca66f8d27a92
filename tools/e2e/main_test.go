package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updraft-io/updraft/tools/internal/stack"
)

// binDir holds the binaries built once for all tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "updraft-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := func() int {
		defer os.RemoveAll(dir)
		args := []string{"build", "-o", dir + "/"}
		if raceFlag != "" {
			args = append(args, raceFlag)
		}
		args = append(args, "./edge/cmd/updraft-edge", "./gateway/cmd/updraft-gateway", "./cloud/cmd/updraft-cloud", "./tools/cmd/updraft-sim")
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build binaries: %v\n", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func repoRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		panic(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// newStack starts gateway, cloud and edge on free ports with state in a
// temporary directory, using the local stack's configuration files.
func newStack(t *testing.T, extra map[string][]string) *stack.Stack {
	t.Helper()
	ports, err := stack.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	args := map[string][]string{
		stack.Cloud: {"--roll-interval", "500ms"},
	}
	for k, v := range extra {
		args[k] = append(args[k], v...)
	}
	s := stack.New(stack.Options{Root: t.TempDir(), Bin: binDir, ConfigDir: filepath.Join(repoRoot(), "deploy", "local"),
		Ports: ports, Args: args})
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			for _, n := range []string{stack.Gateway, stack.Cloud, stack.Edge, stack.Sim} {
				if p := s.Proc(n); p != nil {
					t.Logf("--- %s log (tail) ---\n%s", n, stack.Tail(p.Log, 40))
				}
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range []string{stack.Gateway, stack.Cloud, stack.Edge} {
		if _, err := s.Start(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s; last state: %s", d, what, last)
}
