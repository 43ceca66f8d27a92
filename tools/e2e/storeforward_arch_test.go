package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sfQemu finds a qemu user-mode emulator, or skips (fails with
// UPDRAFT_REQUIRE_EXTERNAL=1) when it is not installed.
func sfQemu(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		missingExternal(t, name, "qemu-user-static", err)
	}
	return path
}

// sfCrossBuild runs go with GOOS=linux and the given GOARCH settings.
func sfCrossBuild(t *testing.T, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), append([]string{"GOOS=linux", "CGO_ENABLED=0"}, env...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s (%s): %v\n%s", strings.Join(args, " "), strings.Join(env, " "), err, out)
	}
}

// TestStoreForwardArm64Buffer cross-compiles the buffer's tests for
// linux/arm64 and runs the crash-recovery and round-trip tests under
// qemu-aarch64-static: the agent's storage works on a 64-bit Raspberry Pi.
func TestStoreForwardArm64Buffer(t *testing.T) {
	qemu := sfQemu(t, "qemu-aarch64-static")
	bin := filepath.Join(t.TempDir(), "buffer.test")
	sfCrossBuild(t, []string{"GOARCH=arm64"}, "test", "-c", "-o", bin, "./edge/internal/buffer/")
	sfCrossBuild(t, []string{"GOARCH=arm64"}, "build", "-o", filepath.Join(t.TempDir(), "updraft-edge"), "./edge/cmd/updraft-edge")
	cmd := exec.Command(qemu, bin, "-test.run", "^(TestRoundTrip|TestReopenKeepsIdentityAndContent|TestOutOfOrderAcks)$", "-test.v", "-test.count=1")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "\nPASS") {
		t.Fatalf("buffer tests under %s: %v\n%s", qemu, err, out)
	}
	t.Logf("arm64 buffer tests under qemu:\n%s", out)
}

// TestStoreForwardArmv7Refuses: the armv7 (32-bit) build of the agent
// refuses to start, saying why, even for --check-config.
func TestStoreForwardArmv7Refuses(t *testing.T) {
	qemu := sfQemu(t, "qemu-arm-static")
	bin := filepath.Join(t.TempDir(), "updraft-edge")
	sfCrossBuild(t, []string{"GOARCH=arm", "GOARM=7"}, "build", "-o", bin, "./edge/cmd/updraft-edge")
	out, err := exec.Command(qemu, bin, "--check-config").CombinedOutput()
	if _, ok := err.(*exec.ExitError); !ok {
		t.Fatalf("armv7 agent --check-config: %v, want a non-zero exit\n%s", err, out)
	}
	for _, want := range []string{"32-bit", "Badger loses data", "arm64"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("armv7 agent's error does not say %q:\n%s", want, out)
		}
	}
	t.Logf("armv7 agent: %s", strings.TrimSpace(string(out)))
}
