package guard

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Dir        string
	Doc        string
	Name       string
	Deps       []string
	GoFiles    []string
}

func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestEdgeStaysSmall: the edge agent runs on a Raspberry Pi. Parquet adds
// about 20 MB to a binary and cloud code has no business there.
func TestEdgeStaysSmall(t *testing.T) {
	for _, p := range list(t, "github.com/updraft-io/updraft/edge/cmd/updraft-edge") {
		for _, d := range p.Deps {
			if strings.Contains(d, "/parquet") || strings.HasPrefix(d, "github.com/updraft-io/updraft/cloud") ||
				strings.HasPrefix(d, "github.com/updraft-io/updraft/gateway") || strings.HasPrefix(d, "github.com/nats-io/nats-server") {
				t.Errorf("updraft-edge depends on %s", d)
			}
		}
	}
}

// TestPackageDocs: every package says what it is for.
func TestPackageDocs(t *testing.T) {
	for _, p := range list(t, "github.com/updraft-io/updraft/...") {
		if len(p.GoFiles) == 0 {
			continue
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s (%s) has no package doc comment", p.ImportPath, filepath.Base(p.Dir))
		}
	}
}
