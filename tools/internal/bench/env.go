package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/updraft-io/updraft/tools/internal/stack"
)

// sizes are the loads and durations of one bench mode.
type sizes struct {
	Warmup         time.Duration // before a measuring window opens
	IngestWindow   time.Duration // ingest: measuring window of each phase
	WireMessages   int64         // wire: MQTT messages published
	LoadRate       float64       // latency, outage, footprint: background messages/s
	LatencyProbes  int           // latency: probe messages
	ProbeInterval  time.Duration // between probes
	OutageCut      time.Duration // outage: how long the uplink is down
	FootprintSpan  time.Duration // footprint: measuring window
	CloudReadings  int           // cloud: readings in the lake
	CloudQueries   int           // cloud: narrow queries timed
	Devices        int
	DrainTimeout   time.Duration
	ReadingsPerMsg int // the simulator's metrics per message
}

func sizesFor(quick bool) sizes {
	if quick {
		return sizes{Warmup: time.Second, IngestWindow: 3 * time.Second, WireMessages: 1000, LoadRate: 300,
			LatencyProbes: 20, ProbeInterval: 100 * time.Millisecond, OutageCut: 3 * time.Second,
			FootprintSpan: 3 * time.Second, CloudReadings: 60_000, CloudQueries: 10, Devices: 20,
			DrainTimeout: 60 * time.Second, ReadingsPerMsg: 3}
	}
	return sizes{Warmup: 3 * time.Second, IngestWindow: 20 * time.Second, WireMessages: 20_000, LoadRate: 1000,
		LatencyProbes: 300, ProbeInterval: 50 * time.Millisecond, OutageCut: 30 * time.Second,
		FootprintSpan: 30 * time.Second, CloudReadings: 2_000_000, CloudQueries: 50, Devices: 50,
		DrainTimeout: 3 * time.Minute, ReadingsPerMsg: 3}
}

// env is one scenario run: a stack on free ports with state in its own
// directory, and a bin directory whose updraft-edge runs with GOMAXPROCS=1,
// pinned to CPU 0 if the scenario asks.
type env struct {
	opts   Options
	sz     sizes
	root   string
	temp   bool
	bin    string
	ports  stack.Ports
	args   map[string][]string
	s      *stack.Stack
	pin    bool   // the edge runs on CPU 0 only
	pinned string // how the edge runs, for the notes
	// mosq is an external broker the edge subscribes to instead of its
	// embedded one (useMosquitto).
	mosq *stack.Mosquitto
	sink *sinkProc // started by startSink
}

func newEnv(opts Options, name string, run int, sz sizes, pin bool) (*env, error) {
	var root string
	var err error
	temp := opts.Work == ""
	if temp {
		root, err = os.MkdirTemp("", "updraft-bench-")
	} else {
		root = filepath.Join(opts.Work, fmt.Sprintf("%s-%d", name, run+1))
		_ = os.RemoveAll(root)
		err = os.MkdirAll(root, 0o755)
	}
	if err != nil {
		return nil, err
	}
	ports, err := stack.FreePorts()
	if err != nil {
		return nil, err
	}
	e := &env{opts: opts, sz: sz, root: root, temp: temp, ports: ports, args: map[string][]string{}, pin: pin}
	if err := e.makeBin(); err != nil {
		return nil, err
	}
	return e, nil
}

// makeBin links the gateway and cloud binaries and wraps the edge in a
// script that execs it with GOMAXPROCS=1, under taskset when the edge is
// pinned and taskset is available, so the process the stack starts is the
// edge itself, pinned from its first instruction.
func (e *env) makeBin() error {
	e.bin = filepath.Join(e.root, "bin")
	if err := os.MkdirAll(e.bin, 0o755); err != nil {
		return err
	}
	abs, err := filepath.Abs(e.opts.Bin)
	if err != nil {
		return err
	}
	for _, n := range []string{"gateway", "cloud", "edge"} {
		if _, err := os.Stat(filepath.Join(abs, "updraft-"+n)); err != nil {
			return fmt.Errorf("binary updraft-%s not found in %s (build with `go tool task build`): %w", n, abs, err)
		}
	}
	for _, n := range []string{"gateway", "cloud"} {
		if err := os.Symlink(filepath.Join(abs, "updraft-"+n), filepath.Join(e.bin, "updraft-"+n)); err != nil {
			return err
		}
	}
	pin := ""
	switch p, err := exec.LookPath("taskset"); {
	case !e.pin:
		e.pinned = "GOMAXPROCS=1, not pinned"
	case err == nil:
		pin = p + " -c 0 "
		e.pinned = "GOMAXPROCS=1, taskset -c 0"
	default:
		e.pinned = "GOMAXPROCS=1, sched_setaffinity CPU 0"
	}
	script := fmt.Sprintf("#!/bin/sh\nGOMAXPROCS=1 exec %s%q \"$@\"\n", pin, filepath.Join(abs, "updraft-edge"))
	return os.WriteFile(filepath.Join(e.bin, "updraft-edge"), []byte(script), 0o755)
}

// start launches the named components in order.
func (e *env) start(ctx context.Context, names ...string) error {
	if e.s == nil {
		args := map[string][]string{stack.Cloud: {"--roll-interval", "500ms"}}
		for k, v := range e.args {
			args[k] = append(args[k], v...)
		}
		e.s = stack.New(stack.Options{Root: e.root, Bin: e.bin, ConfigDir: e.opts.ConfigDir, Ports: e.ports, Args: args})
	}
	for _, n := range names {
		p, err := e.s.Start(ctx, n)
		if err != nil {
			return err
		}
		if n == stack.Edge && e.pin && !strings.Contains(e.pinned, "taskset") {
			if err := pinAll(p.Cmd.Process.Pid, 0); err != nil {
				e.pinned = "GOMAXPROCS=1 only (sched_setaffinity: " + err.Error() + ")"
			}
		}
	}
	return nil
}

// useMosquitto starts Mosquitto, as a site runs it, and points the edge
// (started later) and the simulator at it instead of the edge's embedded
// broker. It reports what the edge subscribes to, for the notes; without
// Mosquitto installed the edge keeps its embedded broker.
func (e *env) useMosquitto() (string, error) {
	dir := filepath.Join(e.root, "mosquitto")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	m, err := stack.StartMosquitto(dir, "")
	if errors.Is(err, stack.ErrNoMosquitto) {
		return "the edge's embedded broker (Mosquitto is not installed), which shares the edge's one core", nil
	}
	if err != nil {
		return "", err
	}
	e.mosq = m
	e.args[stack.Edge] = append(e.args[stack.Edge], "--embedded-broker=false", "--mqtt-broker", m.URL())
	return "Mosquitto (" + m.URL() + "), as at a site; the edge's embedded broker off", nil
}

// sinkProc is updraft-sink, a subscriber that does nothing, running as a
// process of its own against the edge's broker.
type sinkProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startSink runs updraft-sink on topic with GOMAXPROCS=1 and returns once it
// has subscribed.
func (e *env) startSink(topic string) (*sinkProc, error) {
	bin, err := filepath.Abs(filepath.Join(e.opts.Bin, "updraft-sink"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--broker", e.mqttURL(), "--topic", topic, "--client-id", "updraft-bench-ceiling", "--qos", "1")
	logf, err := os.Create(filepath.Join(e.root, "updraft-sink.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	// One core, like the agent: the ceiling is what one process on one core
	// takes from the broker when it does nothing with the messages, and an
	// unconstrained sink would take CPU from the simulator sharing the box.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("updraft-sink (build with `go tool task build`): %w", err)
	}
	p := &sinkProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	e.sink = p
	if _, err := p.count(); err != nil {
		return nil, fmt.Errorf("updraft-sink: %w; log: %s", err, stack.Tail(logf.Name(), 10))
	}
	return p, nil
}

// count asks the sink how many messages it has received.
func (p *sinkProc) count() (int64, error) {
	if _, err := io.WriteString(p.in, "\n"); err != nil {
		return 0, err
	}
	if !p.out.Scan() {
		return 0, fmt.Errorf("no answer: %v", p.out.Err())
	}
	return strconv.ParseInt(p.out.Text(), 10, 64)
}

// stop ends the sink: it exits when its input ends.
func (p *sinkProc) stop() error {
	_ = p.in.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("updraft-sink did not exit when its input ended; killed: %v", <-done)
	}
}

func (e *env) close() error {
	var err error
	if e.sink != nil {
		err = e.sink.stop()
	}
	if e.s != nil {
		err = errors.Join(err, e.s.Stop())
	}
	if e.mosq != nil {
		err = errors.Join(err, e.mosq.Stop())
	}
	if e.temp {
		err = errors.Join(err, os.RemoveAll(e.root))
	}
	return err
}

func (e *env) mqttURL() string {
	if e.mosq != nil {
		return e.mosq.URL()
	}
	return "tcp://127.0.0.1:" + strconv.Itoa(e.ports.MQTT)
}
func (e *env) natsURL() string { return "nats://127.0.0.1:" + strconv.Itoa(e.ports.NATS) }
func (e *env) edgePID() int    { return e.s.Proc(stack.Edge).Cmd.Process.Pid }

// status fetches a component's /api/v1/status.
func (e *env) status(ctx context.Context, name string) (map[string]any, error) {
	var m map[string]any
	return m, stack.GetJSON(ctx, e.s.URL(name)+"/api/v1/status", &m)
}

// edgeCounters is the edge status fields the scenarios use.
type edgeCounters struct {
	at                          time.Time
	acked, accepted, forwarded  float64
	buffered, written, replayed float64
}

func (e *env) edge(ctx context.Context) (edgeCounters, error) {
	m, err := e.status(ctx, stack.Edge)
	if err != nil {
		return edgeCounters{}, err
	}
	return edgeCounters{at: time.Now(), acked: field(m, "mqtt.messages_acked"), accepted: field(m, "mqtt.readings_accepted"),
		forwarded: field(m, "forward.readings_sent"), buffered: field(m, "buffer.buffered_readings"),
		written: field(m, "buffer.written_bytes"), replayed: field(m, "forward.replay_readings_sent")}, nil
}

// edgeAlerts is the sum of the agent's updraft_edge_alerts_total series:
// alerts raised and resolved so far.
func (e *env) edgeAlerts(ctx context.Context) (float64, error) {
	b, err := stack.Get(ctx, e.s.URL(stack.Edge)+"/metrics")
	if err != nil {
		return 0, err
	}
	return stack.SumSeries(b, "updraft_edge_alerts_total")
}

// field looks up a dotted path of numbers in decoded JSON; 0 when absent.
func field(m map[string]any, path string) float64 {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return 0
		}
		cur = mm[k]
	}
	f, _ := cur.(float64)
	return f
}

// poll calls cond every interval until it returns true, an error, or d passes.
func poll(ctx context.Context, d, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// procSample is a process's counters from /proc.
type procSample struct {
	at         time.Time
	cpuSeconds float64 // user + system
	writeBytes float64 // bytes sent to the storage layer
	wchar      float64 // bytes passed to write calls
	rssKB      float64
	hwmKB      float64
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc/<pid>/stat.
const clockTicks = 100

func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // field 14, utime
	st, _ := strconv.ParseFloat(f[12], 64) // field 15, stime
	s.cpuSeconds = (ut + st) / clockTicks
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			switch k {
			case "write_bytes":
				s.writeBytes = n
			case "wchar":
				s.wchar = n
			}
		}
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmRSS":
			s.rssKB = n
		case "VmHWM":
			s.hwmKB = n
		}
	}
	return s, nil
}

// pinAll sets the CPU affinity of every thread of pid to cpu.
func pinAll(pid, cpu int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	var mask [16]uint64
	mask[cpu/64] = 1 << (cpu % 64)
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)))
		if errno != 0 {
			return errno
		}
	}
	return nil
}

// percentiles of ms latencies: p50, p90, p99, max.
func percentiles(ms []float64) (p50, p90, p99, mx float64) {
	if len(ms) == 0 {
		return 0, 0, 0, 0
	}
	s := append([]float64(nil), ms...)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := int(p*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return at(0.50), at(0.90), at(0.99), s[len(s)-1]
}
