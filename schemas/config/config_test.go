package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/updraft-io/updraft/schemas/config"
)

type bufferSettings struct {
	Dir      string          `yaml:"dir" help:"where the buffer lives"`
	MaxBytes config.ByteSize `yaml:"max_bytes" help:"largest buffer on disk"`
	Flush    time.Duration   `yaml:"flush" help:"how often to flush"`
}

type settings struct {
	Listen  string         `yaml:"listen" help:"HTTP address"`
	Buffer  bufferSettings `yaml:"buffer"`
	Tags    []string       `yaml:"tags" help:"labels"`
	Started time.Time      `yaml:"started" help:"a time is one setting, not a group"`
	Secret  string         `yaml:"-"`
	Plain   int            `help:"no yaml tag"`
	hidden  int
}

func defaults() settings {
	return settings{Listen: "127.0.0.1:7410", Buffer: bufferSettings{Dir: ".updraft/buffer", MaxBytes: 64 << 20, Flush: 200 * time.Millisecond}}
}

func (s settings) Validate() error {
	if s.Buffer.MaxBytes < 1<<10 {
		return config.Invalid("buffer.max_bytes", s.Buffer.MaxBytes, "1KiB or more")
	}
	return nil
}

func TestLoad(t *testing.T) {
	got := defaults()
	err := config.Load([]byte("listen: :9000\nbuffer:\n  max_bytes: 1GiB\ntags: [a, b]\n"), &got)
	if err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.Listen, want.Buffer.MaxBytes, want.Tags = ":9000", 1<<30, []string{"a", "b"}
	if got.Listen != want.Listen || got.Buffer != want.Buffer || strings.Join(got.Tags, ",") != "a,b" {
		t.Errorf("Load = %+v, want %+v (absent keys keep their defaults)", got, want)
	}
}

func TestLoadEmpty(t *testing.T) {
	for _, doc := range []string{"", "\n", "# only a comment\n"} {
		got := defaults()
		if err := config.Load([]byte(doc), &got); err != nil {
			t.Errorf("Load(%q) = %v", doc, err)
		}
		if got.Listen != defaults().Listen || got.Buffer != defaults().Buffer {
			t.Errorf("Load(%q) changed the defaults: %+v", doc, got)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown key", "listne: :9000\n", "listne"},
		{"unknown nested key", "buffer:\n  max_byte: 1GiB\n", "max_byte"},
		{"ignored key is unknown too", "secret: x\n", "secret"},
		{"wrong type", "buffer:\n  flush: often\n", "often"},
		{"bad size", "buffer:\n  max_bytes: lots\n", "line 2"},
		{"not YAML", "listen: [\n", "config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := defaults()
			err := config.Load([]byte(tt.doc), &got)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load(%q) = %v, want an error mentioning %q", tt.doc, err, tt.want)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte("listen: :1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := defaults()
	if err := config.LoadFile(path, &got); err != nil || got.Listen != ":1" {
		t.Fatalf("LoadFile = %v, listen %q", err, got.Listen)
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if err := config.LoadFile(missing, &got); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("LoadFile of a missing file: %v, want an error naming it", err)
	}
}

func TestInvalid(t *testing.T) {
	err := config.Invalid("buffer.max_bytes", config.ByteSize(10), "1KiB or more")
	var cerr *config.Error
	if !errors.As(err, &cerr) || cerr.Key != "buffer.max_bytes" || cerr.Allowed != "1KiB or more" {
		t.Fatalf("Invalid = %#v", err)
	}
	for _, part := range []string{"buffer.max_bytes", `"10B"`, "1KiB or more"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("%q lacks %q", err, part)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want config.ByteSize
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"0", 0, true},
		{"10B", 10, true},
		{"512KiB", 512 << 10, true},
		{"64MiB", 64 << 20, true},
		{"1GiB", 1 << 30, true},
		{"2TiB", 2 << 40, true},
		{"1KB", 1000, true},
		{"1MB", 1e6, true},
		{"1GB", 1e9, true},
		{"1.5KiB", 1536, true},
		{" 2 MiB ", 2 << 20, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"-1KiB", 0, false},
		{"lots", 0, false},
		{"1 XB", 0, false},
		{"1mib", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"+Inf", 0, false},
		{"1e30", 0, false},
		{"9000000TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := config.ParseByteSize(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "KiB") {
			t.Errorf("error %q does not say what is accepted", err)
		}
	}
}

func TestByteSizeFormats(t *testing.T) {
	for _, b := range []config.ByteSize{0, 1, 1000, 1 << 10, 1536, 64 << 20, 3 << 30} {
		s := b.String()
		back, err := config.ParseByteSize(s)
		if err != nil || back != b {
			t.Errorf("%d -> %q -> %d, %v", b, s, back, err)
		}
	}
	if got := config.ByteSize(64 << 20).String(); got != "64MiB" {
		t.Errorf("String() = %q", got)
	}
	var b config.ByteSize
	if err := b.Set("4KiB"); err != nil || b != 4096 {
		t.Errorf("Set = %v, %d", err, b)
	}
	if err := b.Set("x"); err == nil {
		t.Error("Set(x) succeeded")
	}
	out, err := yaml.Marshal(struct {
		Size config.ByteSize `yaml:"size"`
	}{256 << 10})
	if err != nil || string(out) != "size: 256KiB\n" {
		t.Errorf("Marshal = %q, %v", out, err)
	}
}

func TestDescribe(t *testing.T) {
	var buf bytes.Buffer
	config.Describe(&buf, defaults())
	out := buf.String()
	for _, want := range []string{
		"listen", "HTTP address", "(default: 127.0.0.1:7410)",
		"buffer.dir", "(default: .updraft/buffer)",
		"buffer.max_bytes", "largest buffer on disk", "(default: 64MiB)",
		"buffer.flush", "(default: 200ms)",
		"tags", "(default: [])",
		"started", "plain",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Describe output lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"secret", "hidden", "started.", "buffer (default"} {
		if strings.Contains(strings.ToLower(out), unwanted) {
			t.Errorf("Describe output has %q:\n%s", unwanted, out)
		}
	}
	var empty bytes.Buffer
	config.Describe(&empty, &bufferSettings{})
	if !strings.Contains(empty.String(), `dir`) || !strings.Contains(empty.String(), `(default: "")`) {
		t.Errorf("Describe of a pointer with an empty string:\n%s", empty.String())
	}
}
