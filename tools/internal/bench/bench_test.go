package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestStats(t *testing.T) {
	for _, tc := range []struct {
		in          []float64
		lo, med, hi float64
	}{
		{[]float64{5}, 5, 5, 5},
		{[]float64{3, 1, 2}, 1, 2, 3},
		{[]float64{4, 1, 3, 2}, 1, 2.5, 4},
	} {
		lo, med, hi := stats(tc.in)
		if lo != tc.lo || med != tc.med || hi != tc.hi {
			t.Errorf("stats(%v) = %v %v %v, want %v %v %v", tc.in, lo, med, hi, tc.lo, tc.med, tc.hi)
		}
	}
}

func metric(b Better, runs ...float64) *Metric {
	m := &Metric{Better: b, Runs: runs}
	m.Min, m.Median, m.Max = stats(runs)
	return m
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur *Metric
		regressed bool
	}{
		{"throughput down beyond assumed noise", metric(Higher, 1000), metric(Higher, 850), true},
		{"throughput down within assumed noise", metric(Higher, 1000), metric(Higher, 950), false},
		{"throughput up", metric(Higher, 1000), metric(Higher, 2000), false},
		{"latency up beyond noise", metric(Lower, 100), metric(Lower, 130), true},
		{"latency down", metric(Lower, 100), metric(Lower, 50), false},
		{"measured noise widens the band", metric(Higher, 700, 1000, 1300), metric(Higher, 800), false},
		{"narrow measured noise flags small changes", metric(Higher, 990, 1000, 1010), metric(Higher, 960, 965, 970), true},
		{"info never flagged", metric(Info, 100), metric(Info, 10), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := Result{Metrics: map[string]*Metric{"m": tc.prev}}
			cur := Result{Metrics: map[string]*Metric{"m": tc.cur}}
			regs := compare(prev, cur, 0.10)
			if got := len(regs) == 1; got != tc.regressed {
				t.Errorf("regressed = %v (%+v), want %v", got, regs, tc.regressed)
			}
		})
	}
}

func TestPreviousPicksLatestOfScenario(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r Result) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("wire-20260101T000000.000Z.json", Result{Scenario: "wire", DurationS: 1})
	write("wire-20260102T000000.000Z.json", Result{Scenario: "wire", DurationS: 2})
	write("wirex-20260103T000000.000Z.json", Result{Scenario: "wirex", DurationS: 3})
	r, path, ok := previous(dir, "wire")
	if !ok || r.DurationS != 2 || filepath.Base(path) != "wire-20260102T000000.000Z.json" {
		t.Fatalf("previous = %+v %s %v, want the 2026-01-02 wire result", r, path, ok)
	}
	if _, _, ok := previous(dir, "cloud"); ok {
		t.Fatal("found a previous cloud result in a directory without one")
	}
}

func TestEveryScenarioIsDefined(t *testing.T) {
	for _, n := range Scenarios() {
		sc, ok := scenarios[n]
		if !ok || sc.run == nil || sc.params == nil || len(sc.specs) == 0 {
			t.Errorf("scenario %s is incomplete", n)
		}
		seen := map[string]bool{}
		for _, sp := range sc.specs {
			if seen[sp.Name] || sp.Unit == "" || sp.Better == "" {
				t.Errorf("%s: metric %q duplicated or without unit/direction", n, sp.Name)
			}
			seen[sp.Name] = true
		}
	}
}

func TestWriteAlertConfig(t *testing.T) {
	for _, tc := range []struct {
		name, base string
		prefix     string
		rules      int // rules in the written file, the probe rule last
	}{
		{"rules kept, prefix kept", "site: lab\nrules:\n  - {name: too-hot, kind: threshold, metric: temperature, above: 30}\nlocal:\n  topic_prefix: site\n", "site", 2},
		{"no rules, no local", "site: lab\n", defaultTopicPrefix, 1},
		{"local publishing off", "local:\n  topic_prefix: \"\"\n  tick: 200ms\n", defaultTopicPrefix, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(tc.base), 0o644); err != nil {
				t.Fatal(err)
			}
			e := &env{opts: Options{ConfigDir: dir}, root: dir, args: map[string][]string{}}
			prefix, err := e.writeAlertConfig()
			if err != nil {
				t.Fatal(err)
			}
			if prefix != tc.prefix {
				t.Errorf("prefix %q, want %q", prefix, tc.prefix)
			}
			args := e.args["edge"]
			if len(args) != 2 || args[0] != "--config" {
				t.Fatalf("edge args %q, want --config FILE", args)
			}
			b, err := os.ReadFile(args[1])
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Site  string `yaml:"site"`
				Rules []struct {
					Name, Kind, Device, Metric string
					Above, Hysteresis          *float64
				} `yaml:"rules"`
				Local struct {
					TopicPrefix string `yaml:"topic_prefix"`
				} `yaml:"local"`
			}
			if err := yaml.Unmarshal(b, &got); err != nil {
				t.Fatalf("written config: %v\n%s", err, b)
			}
			if len(got.Rules) != tc.rules {
				t.Fatalf("%d rules, want %d:\n%s", len(got.Rules), tc.rules, b)
			}
			r := got.Rules[len(got.Rules)-1]
			if r.Name != probeAlertRule || r.Kind != "threshold" || r.Device != probeDevice || r.Metric != probeAlertMetric ||
				r.Above == nil || *r.Above != 0 || r.Hysteresis == nil || *r.Hysteresis != 0 {
				t.Errorf("probe rule %+v:\n%s", r, b)
			}
			if got.Local.TopicPrefix != tc.prefix {
				t.Errorf("local.topic_prefix %q, want %q", got.Local.TopicPrefix, tc.prefix)
			}
		})
	}
}

func TestPacedSideSearch(t *testing.T) {
	p := &pacedSide{name: "agent"}
	p.start(20_000, 40_000)
	// Kept up: the lower bound moves to the rate sent, and a side that
	// acknowledged more than was sent is credited with what was sent.
	p.record(pacedStep{rate: 20_000, sent: 19_000, acked: 19_500})
	if p.lo != 19_000 || p.rate != (19_000+40_000)/2 || p.best.acked != 19_000 {
		t.Fatalf("after keeping up: lo %v rate %v best %v, want 19000, 29500, 19000", p.lo, p.rate, p.best.acked)
	}
	// Fell behind while the simulator was short of the rate: tried again,
	// the bounds unchanged.
	p.record(pacedStep{rate: 29_500, sent: 25_000, acked: 20_000})
	if p.hi != 40_000 || p.rate != 29_500 || p.done {
		t.Fatalf("after a short step: hi %v rate %v done %v, want 40000, 29500, false", p.hi, p.rate, p.done)
	}
	// A second time it bounds the search.
	p.record(pacedStep{rate: 29_500, sent: 26_000, acked: 21_000})
	if p.hi != 26_000 || p.rate != (19_000+26_000)/2 {
		t.Fatalf("after a second short step: hi %v rate %v, want 26000, 22500", p.hi, p.rate)
	}
	// Fell behind at the rate asked: bounds at once.
	p.record(pacedStep{rate: 22_500, sent: 22_400, acked: 20_000})
	if p.hi != 22_400 {
		t.Fatalf("after falling behind: hi %v, want 22400", p.hi)
	}
	// Within 5 %: done, with the best rate kept up with.
	p.record(pacedStep{rate: 20_700, sent: 21_500, acked: 21_400})
	if !p.done || p.best.acked != 21_400 || p.steps != 5 {
		t.Fatalf("done %v best %v steps %v, want true, 21400, 5; tried %s", p.done, p.best.acked, p.steps, p.note())
	}
	if !strings.Contains(p.note(), "tried again") {
		t.Fatalf("note %q does not say which rate was tried again", p.note())
	}
}
