package config_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/updraft-io/updraft/schemas/config"
)

// command is a binary whose Run records the settings it was given and
// fails on request through its listen setting.
func command(ran *settings) config.Command[settings] {
	return config.Command[settings]{
		Name:    "updraft-test",
		Summary: "a binary for testing config.Main",
		Default: defaults,
		Flags: func(fs *flag.FlagSet, c *settings) {
			fs.StringVar(&c.Listen, "listen", c.Listen, "HTTP address")
			fs.Var(&c.Buffer.MaxBytes, "buffer-max-bytes", "largest buffer on disk")
		},
		Run: func(ctx context.Context, c settings, log *slog.Logger) error {
			*ran = c
			switch c.Listen {
			case "fail":
				return errors.New("disk on fire")
			case "bad-config":
				return config.Invalid("listen", c.Listen, "an address that works")
			case "canceled":
				return context.Canceled
			}
			if log == nil || ctx == nil {
				return errors.New("no logger or context")
			}
			return nil
		},
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMainCommand(t *testing.T) {
	good := writeFile(t, "listen: :8000\nbuffer:\n  dir: /var/lib/updraft\n")
	tooSmall := writeFile(t, "buffer:\n  max_bytes: 10\n")
	typo := writeFile(t, "lisen: :8000\n")
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    []string
		stderr    []string
		ranListen string // "" means Run must not run
		ranDir    string
	}{
		{name: "help", args: []string{"--help"}, code: 0,
			stdout: []string{"updraft-test: a binary for testing config.Main", "Usage:", "-config", "-check-config", "-version",
				"-listen", "-buffer-max-bytes", "buffer.max_bytes", "largest buffer on disk", "(default: 64MiB)", "buffer.flush", "(default: 200ms)"}},
		{name: "short help", args: []string{"-h"}, code: 0, stdout: []string{"Settings (YAML keys of --config, with defaults)"}},
		{name: "version", args: []string{"--version"}, code: 0, stdout: []string{"updraft-test "}},
		{name: "check defaults", args: []string{"--check-config"}, code: 0, stdout: []string{"configuration OK"}},
		{name: "check file", args: []string{"--config", good, "--check-config"}, code: 0, stdout: []string{"configuration OK"}},
		{name: "check invalid file", args: []string{"--config", tooSmall, "--check-config"}, code: 2, stderr: []string{"buffer.max_bytes", "10B", "1KiB or more"}},
		{name: "invalid flag value", args: []string{"--buffer-max-bytes", "5", "--check-config"}, code: 2, stderr: []string{"buffer.max_bytes"}},
		{name: "unparsable flag value", args: []string{"--buffer-max-bytes", "lots"}, code: 2, stderr: []string{"lots", "--help"}},
		{name: "unknown key", args: []string{"--config", typo, "--check-config"}, code: 2, stderr: []string{"lisen"}},
		{name: "missing file", args: []string{"--config", "/nonexistent/updraft.yaml"}, code: 2, stderr: []string{"/nonexistent/updraft.yaml"}},
		{name: "unknown flag", args: []string{"--nope"}, code: 2, stderr: []string{"nope", "updraft-test --help"}},
		{name: "run with defaults", code: 0, ranListen: "127.0.0.1:7410", ranDir: ".updraft/buffer"},
		{name: "run with file", args: []string{"--config", good}, code: 0, ranListen: ":8000", ranDir: "/var/lib/updraft"},
		{name: "flag overrides file", args: []string{"--listen", ":9000", "--config", good}, code: 0, ranListen: ":9000", ranDir: "/var/lib/updraft"},
		{name: "run fails", args: []string{"--listen", "fail"}, code: 1, stderr: []string{"disk on fire"}, ranListen: "fail"},
		{name: "run finds bad config", args: []string{"--listen", "bad-config"}, code: 2, stderr: []string{"listen", "an address that works"}, ranListen: "bad-config"},
		{name: "run canceled", args: []string{"--listen", "canceled"}, code: 0, ranListen: "canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran settings
			var stdout, stderr bytes.Buffer
			code := config.Main(tt.args, command(&ran), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, &stdout, &stderr)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, &stdout)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, &stderr)
				}
			}
			if ran.Listen != tt.ranListen || (tt.ranDir != "" && ran.Buffer.Dir != tt.ranDir) {
				t.Errorf("Run got listen %q dir %q, want %q %q", ran.Listen, ran.Buffer.Dir, tt.ranListen, tt.ranDir)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	old := config.Version
	t.Cleanup(func() { config.Version = old })
	config.Version = "v1.2.3"
	var stdout bytes.Buffer
	var ran settings
	if code := config.Main([]string{"--version"}, command(&ran), &stdout, &bytes.Buffer{}); code != 0 || stdout.String() != "updraft-test v1.2.3\n" {
		t.Errorf("--version: code %d, output %q", code, &stdout)
	}
	if config.VersionString() != "v1.2.3" {
		t.Errorf("VersionString() = %q", config.VersionString())
	}
}
