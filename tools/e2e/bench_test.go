package e2e

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/updraft-io/updraft/tools/internal/bench"
)

// TestBenchQuick runs every updraft-bench scenario at its quick size and
// checks that each writes a complete, sane JSON result. It asserts no speed.
func TestBenchQuick(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := bench.Options{Bin: binDir, ConfigDir: filepath.Join(repoRoot(), "deploy", "local"), RepoRoot: repoRoot(),
		Out: out, Quick: true, Repeat: 1}
	log := io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	if _, err := bench.Run(ctx, opts, []string{"all"}, log); err != nil {
		t.Fatal(err)
	}
	for _, name := range bench.Scenarios() {
		t.Run(name, func(t *testing.T) {
			paths, _ := filepath.Glob(filepath.Join(out, name+"-*.json"))
			if len(paths) != 1 {
				t.Fatalf("want one result file for %s, found %v", name, paths)
			}
			b, err := os.ReadFile(paths[0])
			if err != nil {
				t.Fatal(err)
			}
			var r bench.Result
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("%s: %v", paths[0], err)
			}
			bnCheckResult(t, name, r)
		})
	}
}

// bnCheckResult checks one scenario result is complete and its numbers sane.
func bnCheckResult(t *testing.T, name string, r bench.Result) {
	t.Helper()
	if r.Scenario != name || !r.Quick || r.Repeat != 1 || r.DurationS <= 0 || r.Machine.NumCPU < 1 || r.Params == nil {
		t.Errorf("header incomplete: scenario %q quick %v repeat %d duration %v machine %+v params %v",
			r.Scenario, r.Quick, r.Repeat, r.DurationS, r.Machine, r.Params)
	}
	want := bench.Expected(name)
	if len(want) == 0 {
		t.Fatalf("no metrics defined for %s", name)
	}
	for m, zeroOK := range want {
		got := r.Metrics[m]
		if got == nil {
			t.Errorf("%s: metric %s missing", name, m)
			continue
		}
		if len(got.Runs) != 1 || got.Unit == "" || got.Better == "" {
			t.Errorf("%s: %s incomplete: %+v", name, m, got)
			continue
		}
		v := got.Runs[0]
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || (v == 0 && !zeroOK) {
			t.Errorf("%s: %s = %v, want a positive finite number", name, m, v)
		}
		if got.Min != v || got.Median != v || got.Max != v {
			t.Errorf("%s: %s min/median/max %v/%v/%v over one run %v", name, m, got.Min, got.Median, got.Max, v)
		}
		if got.Unit == "ratio" && (v < 0 || v > 1) {
			t.Errorf("%s: ratio %s = %v, want within [0, 1]", name, m, v)
		}
	}
	if name == "latency" && r.Notes["local_alert_latency"] == "" {
		t.Errorf("latency: the local alert latency is neither measured nor reported as not available")
	}
}
