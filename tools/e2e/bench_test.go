package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
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
		// A fraction is at most 1. ratio_to_ceiling compares rates measured
		// apart (ingest: a paced rate against a ceiling measured in turns with it),
		// and alerts per message count raises and resolutions: both may
		// pass 1, not 2.
		hi := 1.0
		if strings.HasPrefix(m, "ratio_to_") || strings.HasSuffix(m, "alerts_per_msg") {
			hi = 2
		}
		if got.Unit == "ratio" && (v < 0 || v > hi) {
			t.Errorf("%s: ratio %s = %v, want within [0, %v]", name, m, v, hi)
		}
	}
	if name == "latency" && r.Notes["local_alert_latency"] == "" {
		t.Errorf("latency: no note on how the local alert latency is measured")
	}
}

// TestBenchComparesWithPrevious runs the quick wire scenario twice into one
// results directory and checks that the second run is compared with the
// first: in its JSON file and in its table.
func TestBenchComparesWithPrevious(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := bench.Options{Bin: binDir, ConfigDir: filepath.Join(repoRoot(), "deploy", "local"), RepoRoot: repoRoot(),
		Out: out, Quick: true, Repeat: 1}
	var tables [2]bytes.Buffer
	var runs [2]bench.Result
	for i := range runs {
		res, err := bench.Run(ctx, opts, []string{"wire"}, &tables[i])
		if err != nil {
			t.Fatalf("run %d: %v\n%s", i+1, err, tables[i].String())
		}
		if len(res) != 1 {
			t.Fatalf("run %d: %d results, want 1", i+1, len(res))
		}
		runs[i] = res[0]
	}
	paths, _ := filepath.Glob(filepath.Join(out, "wire-*.json"))
	if len(paths) != 2 {
		t.Fatalf("want two result files, found %v", paths)
	}
	first, second := bnReadResult(t, paths[0]), bnReadResult(t, paths[1])
	bnCheckResult(t, "wire", first)
	bnCheckResult(t, "wire", second)
	if first.ComparedTo != "" {
		t.Errorf("first run compared to %q, want nothing to compare with", first.ComparedTo)
	}
	if !strings.Contains(tables[0].String(), "no previous result to compare with") {
		t.Errorf("first table does not say there is nothing to compare with:\n%s", tables[0].String())
	}
	if second.ComparedTo != filepath.Base(paths[0]) {
		t.Errorf("second run compared to %q, want %q", second.ComparedTo, filepath.Base(paths[0]))
	}
	if runs[1].ComparedTo != second.ComparedTo {
		t.Errorf("returned result compared to %q, file says %q", runs[1].ComparedTo, second.ComparedTo)
	}
	if second.Noise != 0.10 {
		t.Errorf("second run noise %v, want the default 0.10 for single runs", second.Noise)
	}

	// The comparison fields are in the file even when nothing regressed.
	var raw map[string]json.RawMessage
	b, err := os.ReadFile(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"compared_to", "noise", "regressions"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("second result lacks %q", k)
		}
	}
	if string(raw["regressions"]) == "null" {
		t.Errorf("regressions is null, want a list")
	}

	// Each regression (the two runs may differ) must be a worse move beyond
	// the noise of a compared metric, between the two files' medians.
	for _, r := range second.Regressions {
		p, c := first.Metrics[r.Metric], second.Metrics[r.Metric]
		if p == nil || c == nil || c.Better == bench.Info {
			t.Errorf("regression on %q, not a compared metric of both runs", r.Metric)
			continue
		}
		if r.Previous != p.Median || r.Current != c.Median {
			t.Errorf("%s: regression %v -> %v, medians %v -> %v", r.Metric, r.Previous, r.Current, p.Median, c.Median)
		}
		worse := (c.Better == bench.Higher && r.Change < 0) || (c.Better == bench.Lower && r.Change > 0)
		if !worse || math.Abs(r.Change) <= r.Noise || r.Noise <= 0 {
			t.Errorf("%s: change %+.3f with noise %.3f (better %s) is not a regression", r.Metric, r.Change, r.Noise, c.Better)
		}
	}

	// The table has a verdict per compared metric and a summary line.
	table := tables[1].String()
	if len(second.Regressions) == 0 && !strings.Contains(table, "no regression beyond the noise against "+second.ComparedTo) {
		t.Errorf("second table lacks the no-regression summary:\n%s", table)
	}
	for name, m := range second.Metrics {
		if m.Better == bench.Info {
			continue
		}
		verdict := "ok"
		for _, r := range second.Regressions {
			if r.Metric == name {
				verdict = "REGRESSION"
			}
		}
		if !bnTableRowHas(table, name, verdict) {
			t.Errorf("second table: row %s lacks %q:\n%s", name, verdict, table)
		}
	}
}

// bnReadResult decodes one result file.
func bnReadResult(t *testing.T, path string) bench.Result {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r bench.Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return r
}

// bnTableRowHas reports whether the table row of metric holds the verdict want.
func bnTableRowHas(table, metric, want string) bool {
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == metric {
			return strings.Contains(l, " "+want)
		}
	}
	return false
}
