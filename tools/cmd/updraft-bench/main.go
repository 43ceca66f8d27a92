// Command updraft-bench measures the Updraft pipeline against its ceilings:
// `updraft-bench [flags] [scenario ...]` runs ingest, wire, latency, outage,
// footprint and cloud (or the ones named), prints a table per scenario and
// writes one JSON file per run to --out, flagging regressions against the
// previous run. `go tool task bench` calls it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/updraft-io/updraft/tools/internal/bench"
)

func main() {
	fs := flag.NewFlagSet("updraft-bench", flag.ExitOnError)
	var o bench.Options
	fs.StringVar(&o.Bin, "bin", "bin", "directory holding updraft-edge, updraft-gateway and updraft-cloud")
	fs.StringVar(&o.ConfigDir, "config-dir", "deploy/local", "directory holding edge.yaml, gateway.yaml and cloud.yaml")
	fs.StringVar(&o.Out, "out", "bench-results", "results directory: one JSON file per scenario run, compared with the previous one")
	fs.StringVar(&o.Work, "work", "", `scratch directory for the stacks' state; "" = a temporary directory, removed after each run`)
	fs.StringVar(&o.RepoRoot, "repo", "", `module root, to cross-compile the edge for linux/arm64; "" = found with go env GOMOD`)
	fs.BoolVar(&o.Quick, "quick", false, "small sizes: every scenario in about a minute in total")
	fs.IntVar(&o.Repeat, "repeat", 1, "runs per scenario; min, median and max are reported and their spread is the noise")
	fs.Float64Var(&o.Noise, "noise", 0.10, "relative change taken as noise when a scenario ran only once")
	failOnRegression := fs.Bool("fail-on-regression", false, "exit with status 3 when a metric regressed beyond the noise")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: updraft-bench [flags] [all | %s ...]\n\n", strings.Join(bench.Scenarios(), " | "))
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if o.RepoRoot == "" {
		if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
			if mod := strings.TrimSpace(string(out)); mod != "" && mod != os.DevNull {
				o.RepoRoot = filepath.Dir(mod)
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	results, err := bench.Run(ctx, o, fs.Args(), os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "updraft-bench: %v\n", err)
		os.Exit(1)
	}
	for _, r := range results {
		if len(r.Regressions) > 0 && *failOnRegression {
			fmt.Fprintf(os.Stderr, "updraft-bench: %s regressed against %s\n", r.Scenario, r.ComparedTo)
			os.Exit(3)
		}
	}
}
