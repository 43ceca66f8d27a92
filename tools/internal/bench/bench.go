// Package bench measures the Updraft pipeline against its ceilings: each
// scenario runs the real binaries on loopback, prints a table and writes one
// JSON file per run, compared with the previous run of the same scenario.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Options configure a bench run.
type Options struct {
	Bin       string // directory holding updraft-edge, -gateway, -cloud
	ConfigDir string // deploy/local: edge.yaml, gateway.yaml, cloud.yaml
	RepoRoot  string // module root, to cross-compile the edge for linux/arm64
	Out       string // results directory: one JSON file per scenario run
	Work      string // scratch directory for stack state; "" = a temporary one
	Quick     bool   // small sizes: every scenario in about a minute in total
	Repeat    int    // runs per scenario; min, median and max are reported
	// Noise is the relative change assumed to be noise when a single run
	// (Repeat 1) cannot measure it; 0 means 0.10.
	Noise float64
}

// Scenarios lists every scenario in the order `updraft-bench all` runs them.
func Scenarios() []string {
	return []string{"ingest", "wire", "latency", "outage", "footprint", "cloud"}
}

// Better says which direction of a metric is an improvement.
type Better string

const (
	Higher Better = "higher"
	Lower  Better = "lower"
	// Info metrics describe the run (sizes, counts) and are never flagged.
	Info Better = "info"
)

// spec describes one metric of a scenario.
type spec struct {
	Name   string
	Unit   string
	Better Better
	// ZeroOK marks metrics that may legitimately be zero.
	ZeroOK bool
	Help   string
}

// sample is what one run of a scenario measured.
type sample struct {
	values map[string]float64
	notes  map[string]string
}

func newSample() sample { return sample{values: map[string]float64{}, notes: map[string]string{}} }

// Metric is one measured quantity over the repeats of a run.
type Metric struct {
	Unit   string    `json:"unit"`
	Better Better    `json:"better"`
	ZeroOK bool      `json:"zero_ok,omitempty"`
	Help   string    `json:"help"`
	Runs   []float64 `json:"runs"`
	Min    float64   `json:"min"`
	Median float64   `json:"median"`
	Max    float64   `json:"max"`
}

// Machine describes where the numbers were measured.
type Machine struct {
	NumCPU    int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	GoVersion string `json:"go_version"`
}

// Regression is a metric that got worse than the previous run by more than
// the noise.
type Regression struct {
	Metric   string  `json:"metric"`
	Previous float64 `json:"previous_median"`
	Current  float64 `json:"current_median"`
	Change   float64 `json:"change"` // relative, signed: (current-previous)/previous
	Noise    float64 `json:"noise"`  // relative band within which changes are noise
}

// Result is the JSON file of one scenario run.
type Result struct {
	Scenario    string             `json:"scenario"`
	Started     time.Time          `json:"started"`
	DurationS   float64            `json:"duration_s"`
	Quick       bool               `json:"quick"`
	Repeat      int                `json:"repeat"`
	Machine     Machine            `json:"machine"`
	Params      map[string]any     `json:"params"`
	Metrics     map[string]*Metric `json:"metrics"`
	Notes       map[string]string  `json:"notes,omitempty"`
	ComparedTo  string             `json:"compared_to,omitempty"`
	Noise       float64            `json:"noise"`
	Regressions []Regression       `json:"regressions"`
}

// scenario is one runnable measurement.
type scenario struct {
	specs  []spec
	params func(sz sizes) map[string]any
	run    func(ctx context.Context, e *env) (sample, error)
	// pin runs the edge on CPU 0 only, away from what the scheduler
	// would give it on the other cores (always GOMAXPROCS=1).
	pin bool
}

var scenarios = map[string]scenario{
	"ingest":    ingestScenario,
	"wire":      wireScenario,
	"latency":   latencyScenario,
	"outage":    outageScenario,
	"footprint": footprintScenario,
	"cloud":     cloudScenario,
}

// Run runs the named scenarios ("all" = every one) and returns the written
// results in order.
func Run(ctx context.Context, opts Options, names []string, out io.Writer) ([]Result, error) {
	if opts.Repeat < 1 {
		opts.Repeat = 1
	}
	if opts.Noise <= 0 {
		opts.Noise = 0.10
	}
	if len(names) == 0 || slices.Contains(names, "all") {
		names = Scenarios()
	}
	for _, n := range names {
		if _, ok := scenarios[n]; !ok {
			return nil, fmt.Errorf("unknown scenario %q; known: %s, all", n, strings.Join(Scenarios(), ", "))
		}
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create results directory: %w", err)
	}
	total := time.Now()
	var results []Result
	for _, n := range names {
		res, err := runScenario(ctx, opts, n, out)
		if err != nil {
			return results, fmt.Errorf("scenario %s: %w", n, err)
		}
		results = append(results, res)
	}
	fmt.Fprintf(out, "\nall done in %s\n", time.Since(total).Round(time.Second))
	return results, nil
}

func runScenario(ctx context.Context, opts Options, name string, out io.Writer) (Result, error) {
	sc := scenarios[name]
	sz := sizesFor(opts.Quick)
	res := Result{Scenario: name, Started: time.Now().UTC(), Quick: opts.Quick, Repeat: opts.Repeat,
		Machine: machine(), Params: sc.params(sz), Metrics: map[string]*Metric{}, Notes: map[string]string{},
		Regressions: []Regression{}}
	fmt.Fprintf(out, "\n== %s (%d run(s)%s)\n", name, opts.Repeat, map[bool]string{true: ", quick"}[opts.Quick])
	for i := range opts.Repeat {
		e, err := newEnv(opts, name, i, sz, sc.pin)
		if err != nil {
			return res, err
		}
		s, err := sc.run(ctx, e)
		if cerr := e.close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return res, err
		}
		for _, sp := range sc.specs {
			v, ok := s.values[sp.Name]
			if !ok {
				return res, fmt.Errorf("run %d did not measure %s", i+1, sp.Name)
			}
			m := res.Metrics[sp.Name]
			if m == nil {
				m = &Metric{Unit: sp.Unit, Better: sp.Better, ZeroOK: sp.ZeroOK, Help: sp.Help}
				res.Metrics[sp.Name] = m
			}
			m.Runs = append(m.Runs, v)
		}
		for k, v := range s.notes {
			res.Notes[k] = v
		}
	}
	for _, m := range res.Metrics {
		m.Min, m.Median, m.Max = stats(m.Runs)
	}
	res.DurationS = time.Since(res.Started).Seconds()
	res.Noise = opts.Noise
	if prev, path, ok := previous(opts.Out, name); ok {
		res.ComparedTo = filepath.Base(path)
		res.Regressions = compare(prev, res, opts.Noise)
	}
	path := filepath.Join(opts.Out, fmt.Sprintf("%s-%s.json", name, res.Started.Format("20060102T150405.000Z")))
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return res, err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return res, fmt.Errorf("write result: %w", err)
	}
	printTable(out, sc.specs, res)
	fmt.Fprintf(out, "  written %s (%.0fs)\n", path, res.DurationS)
	return res, nil
}

// stats returns min, median and max.
func stats(xs []float64) (lo, med, hi float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0, 0, 0
	}
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return s[0], med, s[n-1]
}

// previous loads the latest earlier result of the scenario in dir.
func previous(dir, name string) (Result, string, bool) {
	paths, _ := filepath.Glob(filepath.Join(dir, name+"-*.json"))
	sort.Strings(paths) // the timestamp in the name sorts in time order
	for i := len(paths) - 1; i >= 0; i-- {
		b, err := os.ReadFile(paths[i])
		if err != nil {
			continue
		}
		var r Result
		if json.Unmarshal(b, &r) == nil && r.Scenario == name {
			return r, paths[i], true
		}
	}
	return Result{}, "", false
}

// spread is a metric's relative spread over its repeats: (max-min)/median.
func spread(m *Metric) float64 {
	if m == nil || len(m.Runs) < 2 || m.Median == 0 {
		return 0
	}
	return (m.Max - m.Min) / abs(m.Median)
}

// compare flags metrics whose median moved in the worse direction by more
// than the noise: the larger relative spread of the two runs' repeats, or the
// assumed noise when neither run was repeated.
func compare(prev, cur Result, assumed float64) []Regression {
	regs := []Regression{}
	for name, m := range cur.Metrics {
		p := prev.Metrics[name]
		if p == nil || m.Better == Info || p.Median == 0 {
			continue
		}
		noise := max(spread(m), spread(p))
		if noise == 0 {
			noise = assumed
		}
		change := (m.Median - p.Median) / abs(p.Median)
		worse := (m.Better == Higher && change < -noise) || (m.Better == Lower && change > noise)
		if worse {
			regs = append(regs, Regression{Metric: name, Previous: p.Median, Current: m.Median, Change: change, Noise: noise})
		}
	}
	sort.Slice(regs, func(i, j int) bool { return regs[i].Metric < regs[j].Metric })
	return regs
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func printTable(out io.Writer, specs []spec, res Result) {
	fmt.Fprintf(out, "  %-34s %14s %14s %14s  %-14s %s\n", "metric", "min", "median", "max", "unit", "vs previous")
	for _, sp := range specs {
		m := res.Metrics[sp.Name]
		vs := ""
		if res.ComparedTo != "" {
			vs = "ok"
			if sp.Better == Info {
				vs = ""
			}
			for _, r := range res.Regressions {
				if r.Metric == sp.Name {
					vs = fmt.Sprintf("REGRESSION %+.1f%% (noise %.1f%%)", 100*r.Change, 100*r.Noise)
				}
			}
		}
		fmt.Fprintf(out, "  %-34s %14s %14s %14s  %-14s %s\n", sp.Name, num(m.Min), num(m.Median), num(m.Max), sp.Unit, vs)
	}
	keys := make([]string, 0, len(res.Notes))
	for k := range res.Notes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "  note %s: %s\n", k, res.Notes[k])
	}
	if res.ComparedTo == "" {
		fmt.Fprintln(out, "  no previous result to compare with")
	} else if len(res.Regressions) == 0 {
		fmt.Fprintf(out, "  no regression beyond the noise against %s\n", res.ComparedTo)
	}
}

func num(v float64) string {
	switch a := abs(v); {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func machine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// Expected returns the metrics a scenario's result must hold, and whether
// each may be zero.
func Expected(name string) map[string]bool {
	out := map[string]bool{}
	for _, sp := range scenarios[name].specs {
		out[sp.Name] = sp.ZeroOK
	}
	return out
}
