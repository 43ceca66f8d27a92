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
		args = append(args, "./edge/cmd/updraft-edge", "./gateway/cmd/updraft-gateway", "./cloud/cmd/updraft-cloud", "./tools/cmd/updraft-sim", "./tools/cmd/updraft-sink")
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build binaries: %v\n", err)
			return 1
		}
		if raceFlag == "" {
			return m.Run()
		}
		// The binaries run with the race detector. Their reports go to files
		// so that a race is judged by where it is: one with a frame in
		// Updraft's code fails the run; one wholly inside a dependency is
		// printed, since it is not ours to fix here.
		races := filepath.Join(dir, "race")
		os.Setenv("GORACE", "exitcode=0 log_path="+races)
		code := m.Run()
		if !checkRaceReports(dir) && code == 0 {
			code = 1
		}
		return code
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

// checkRaceReports prints every race report the binaries wrote and reports
// false if any involves Updraft's own code.
func checkRaceReports(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "race.*"))
	ok := true
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			continue
		}
		ours := strings.Contains(string(b), "github.com/updraft-io/updraft/")
		if ours {
			ok = false
			fmt.Fprintf(os.Stderr, "FAIL: data race involving Updraft code in a binary under test (%s):\n%s\n", filepath.Base(f), b)
		} else {
			fmt.Fprintf(os.Stderr, "warning: data race inside a dependency in a binary under test (%s):\n%s\n", filepath.Base(f), b)
		}
	}
	return ok
}

// missingExternal reports that program, from Debian package pkg, was not
// found (lookup is the error of looking for it): the test fails when
// UPDRAFT_REQUIRE_EXTERNAL=1 (as in CI) and is skipped otherwise. Both say
// where it was looked for, so a reader can check.
func missingExternal(t testing.TB, program, pkg string, lookup error) {
	t.Helper()
	path := os.Getenv("PATH")
	if os.Getenv("UPDRAFT_REQUIRE_EXTERNAL") == "1" {
		t.Fatalf("%s not found (%v; PATH=%s); install Debian package %s; UPDRAFT_REQUIRE_EXTERNAL=1 requires it",
			program, lookup, path, pkg)
	}
	t.Skipf("%s not found (%v; PATH=%s); install Debian package %s; set UPDRAFT_REQUIRE_EXTERNAL=1 to fail instead",
		program, lookup, path, pkg)
}
