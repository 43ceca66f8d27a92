package e2e

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the binaries' --help")

// TestConfigurationReference keeps docs/configuration.md equal to what the
// binaries print for --help, so the documented settings and defaults are the
// real ones. Regenerate with `go tool task docs`.
func TestConfigurationReference(t *testing.T) {
	var doc bytes.Buffer
	doc.WriteString("# Configuration reference\n\n" +
		"Every setting of every binary with its default, as printed by `--help`. Settings are YAML keys of the file\n" +
		"given with `--config`; dotted keys are nested sections. Flags override the file. This page is generated\n" +
		"(`go tool task docs`) and a test fails when it differs from the binaries.\n")
	for _, bin := range []string{"updraft-edge", "updraft-gateway", "updraft-cloud", "updraft-sim"} {
		out, err := exec.Command(filepath.Join(binDir, bin), "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", bin, err, out)
		}
		doc.WriteString("\n## " + bin + "\n\n```text\n")
		doc.Write(out)
		doc.WriteString("```\n")
	}
	path := filepath.Join(repoRoot(), "docs", "configuration.md")
	if *update {
		if err := os.WriteFile(path, doc.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it with go tool task docs)", err)
	}
	if !bytes.Equal(have, doc.Bytes()) {
		t.Fatalf("docs/configuration.md is out of date with the binaries' --help; run: go tool task docs")
	}
}
