package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/updraft-io/updraft/tools/internal/verify"
)

// Up starts the pipeline, prints where everything listens, then one live
// status line until ctx ends (Ctrl-C), and stops everything.
func Up(ctx context.Context, opts Options, out io.Writer) error {
	s := New(opts)
	if err := s.startPipeline(ctx, out); err != nil {
		return err
	}
	if _, err := s.Start(ctx, Sim); err != nil {
		_ = s.Stop()
		return err
	}
	p := opts.Ports
	fmt.Fprintf(out, `Updraft local stack is running. State in %s, logs in %s.
  devices --MQTT %s--> edge agent --NATS %s--> gateway (JetStream) --> cloud writer --> %s
  edge API     %s/api/v1/status   (metrics at /metrics)
  gateway API  %s/api/v1/status   NATS monitoring http://%s
  cloud API    %s/api/v1/query?device=dev-00001&metric=temperature
  simulator    %s/api/v1/status
Press Ctrl-C to stop.
`, opts.Root, s.LogDir(), addr(p.MQTT), addr(p.NATS), s.LakeDir(),
		s.URL(Edge), s.URL(Gateway), addr(p.NATSMonitor), s.URL(Cloud), s.URL(Sim))
	tty := isTerminal(out)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "\nstopping...")
			err := s.Stop()
			if err == nil {
				fmt.Fprintln(out, "stopped cleanly")
			}
			return err
		case <-s.Proc(Sim).Done():
			fmt.Fprintln(out, "\nsimulator finished; the pipeline keeps running until Ctrl-C")
			<-ctx.Done()
		case <-tick.C:
			line := s.Snapshot(ctx).Line()
			if tty {
				fmt.Fprintf(out, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(out, line)
			}
		}
	}
}

func (s *Stack) startPipeline(ctx context.Context, out io.Writer) error {
	for _, n := range []string{Gateway, Cloud, Edge} {
		fmt.Fprintf(out, "starting %s...\n", n)
		if _, err := s.Start(ctx, n); err != nil {
			_ = s.Stop()
			return err
		}
	}
	return nil
}

// DemoResult is the demo's verification report.
type DemoResult struct {
	verify.Report
	Messages   float64 `json:"messages"`
	DrainTime  string  `json:"drain_time"`
	LatencyP50 float64 `json:"latency_p50_ms"`
	LatencyP99 float64 `json:"latency_p99_ms"`
	LatencyMax float64 `json:"latency_max_ms"`
}

// Summary is the simulator's --summary file.
type Summary struct {
	Readings int            `json:"readings"`
	Messages int            `json:"messages"`
	Devices  map[string]int `json:"devices"`
}

// Demo runs the stack from empty state for d, stops the simulator, waits for
// the pipeline to drain and verifies the lake against what the broker
// acknowledged to the simulator.
func Demo(ctx context.Context, opts Options, d time.Duration, out io.Writer) (DemoResult, error) {
	for _, sub := range []string{"gateway", "edge", "lake", "logs", "sim-summary.json"} {
		if err := os.RemoveAll(filepath.Join(opts.Root, sub)); err != nil {
			return DemoResult{}, err
		}
	}
	fmt.Fprintf(out, "demo: empty state in %s, running for %s\n", opts.Root, d)
	opts.Args = withArgs(opts.Args, Sim, "--duration", d.String())
	s := New(opts)
	defer s.Stop()
	if err := s.startPipeline(ctx, out); err != nil {
		return DemoResult{}, err
	}
	sim, err := s.Start(ctx, Sim)
	if err != nil {
		return DemoResult{}, err
	}
	tty := isTerminal(out)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	show := func() Snapshot {
		snap := s.Snapshot(ctx)
		if tty {
			fmt.Fprintf(out, "\r\033[K%s", snap.Line())
		} else {
			fmt.Fprintln(out, snap.Line())
		}
		return snap
	}
wait:
	for {
		select {
		case <-ctx.Done():
			return DemoResult{}, ctx.Err()
		case <-sim.Done():
			break wait
		case <-tick.C:
			show()
		}
	}
	if sim.Err() != nil {
		return DemoResult{}, fmt.Errorf("simulator failed: %v; log %s\n%s", sim.Err(), sim.Log, Tail(sim.Log, 20))
	}
	var sum Summary
	b, err := os.ReadFile(s.SummaryPath())
	if err != nil {
		return DemoResult{}, fmt.Errorf("read simulator summary: %w", err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		return DemoResult{}, fmt.Errorf("parse simulator summary %s: %w", s.SummaryPath(), err)
	}
	fmt.Fprintf(out, "\nsimulator done: %d readings in %d messages acknowledged by the broker; draining...\n", sum.Readings, sum.Messages)

	// Drain: wait until the lake holds everything, giving up only when
	// nothing has moved for a while.
	start := time.Now()
	last, lastMove := -1.0, time.Now()
	var snap Snapshot
	for {
		snap = s.Snapshot(ctx)
		if snap.InLake >= float64(sum.Readings) && snap.Buffered == 0 {
			break
		}
		if snap.InLake != last {
			last, lastMove = snap.InLake, time.Now()
		}
		if time.Since(lastMove) > 30*time.Second {
			fmt.Fprintf(out, "no progress for 30s; verifying what is there\n")
			break
		}
		select {
		case <-ctx.Done():
			return DemoResult{}, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	drain := time.Since(start)
	rows, files, err := verify.ReadLake(s.LakeDir(), "raw")
	if err != nil {
		return DemoResult{}, err
	}
	rep := verify.Counts(rows, sum.Devices)
	rep.Files = files
	res := DemoResult{Report: rep, Messages: float64(sum.Messages), DrainTime: drain.Round(time.Millisecond).String(),
		LatencyP50: snap.LatencyP50, LatencyP99: snap.LatencyP99, LatencyMax: snap.LatencyMax}
	fmt.Fprintf(out, `
Verification
  readings published (acked by broker) %d in %d messages
  readings in the lake                 %d in %d Parquet files
  unique readings                      %d
  duplicates                           %d
  missing                              %d
  unexpected                           %d
  drain time after the simulator       %s
  end-to-end latency (reading time to lake commit): p50 %.0f ms, p99 %.0f ms, max %.0f ms
`, rep.Published, sum.Messages, rep.InLake, rep.Files, rep.Unique, rep.Duplicates, rep.Missing, rep.Unexpected,
		res.DrainTime, res.LatencyP50, res.LatencyP99, res.LatencyMax)
	for _, e := range rep.Examples {
		fmt.Fprintf(out, "  e.g. %s\n", e)
	}
	if err := s.Stop(); err != nil {
		fmt.Fprintf(out, "warning: %v\n", err)
	}
	if !rep.OK() {
		return res, fmt.Errorf("verification failed: %s", rep)
	}
	fmt.Fprintln(out, "OK: every published reading is in the lake exactly once")
	return res, nil
}

func withArgs(m map[string][]string, name string, args ...string) map[string][]string {
	out := map[string][]string{}
	for k, v := range m {
		out[k] = v
	}
	out[name] = append(append([]string{}, out[name]...), args...)
	return out
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
