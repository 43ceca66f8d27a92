// Package stack runs the whole Updraft pipeline on one machine as separate
// processes on loopback: gateway, cloud writer, edge agent (with its embedded
// MQTT broker) and the device simulator. `task up`, `task demo` and the
// end-to-end tests all use it, so what a user runs is what the tests prove.
package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Component names, in start order.
const (
	Gateway = "gateway"
	Cloud   = "cloud"
	Edge    = "edge"
	Sim     = "sim"
)

// Ports are the loopback ports of one stack.
type Ports struct {
	MQTT, NATS, NATSMonitor, EdgeHTTP, GatewayHTTP, CloudHTTP, SimHTTP int
}

// LocalPorts are the fixed ports of `task up`, documented in the README.
func LocalPorts() Ports {
	return Ports{MQTT: 1883, NATS: 4222, NATSMonitor: 8222, EdgeHTTP: 7410, GatewayHTTP: 7420, CloudHTTP: 7430, SimHTTP: 7440}
}

// FreePorts picks unused loopback ports, for tests that run stacks side by side.
func FreePorts() (Ports, error) {
	var ps [7]int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for i := range ps {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return Ports{}, err
		}
		lns = append(lns, l)
		ps[i] = l.Addr().(*net.TCPAddr).Port
	}
	return Ports{ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6]}, nil
}

// Options configure a stack.
type Options struct {
	Root      string // state directory (".updraft"): data, lake, logs, summary
	Bin       string // directory holding the four binaries
	ConfigDir string // directory with edge.yaml, gateway.yaml, cloud.yaml, sim.yaml
	Ports     Ports
	// Args adds command-line flags per component, after the stack's own.
	Args map[string][]string
}

// Stack is a set of running processes.
type Stack struct {
	opts  Options
	mu    sync.Mutex
	procs map[string]*Proc
}

// Proc is one running binary.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
	err  error
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the exit error after Done.
func (p *Proc) Err() error { <-p.done; return p.err }

// New prepares a stack; nothing runs until Start.
func New(opts Options) *Stack {
	return &Stack{opts: opts, procs: map[string]*Proc{}}
}

// Paths under Root.
func (s *Stack) LakeDir() string     { return filepath.Join(s.opts.Root, "lake") }
func (s *Stack) SummaryPath() string { return filepath.Join(s.opts.Root, "sim-summary.json") }
func (s *Stack) LogDir() string      { return filepath.Join(s.opts.Root, "logs") }

// URL is a component's HTTP base URL.
func (s *Stack) URL(name string) string {
	p := s.opts.Ports
	port := map[string]int{Edge: p.EdgeHTTP, Gateway: p.GatewayHTTP, Cloud: p.CloudHTTP, Sim: p.SimHTTP}[name]
	return "http://127.0.0.1:" + strconv.Itoa(port)
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func (s *Stack) args(name string) []string {
	p, root := s.opts.Ports, s.opts.Root
	cfg := func(f string) []string {
		path := filepath.Join(s.opts.ConfigDir, f)
		if _, err := os.Stat(path); err != nil {
			return nil
		}
		return []string{"--config", path}
	}
	natsURL := "nats://" + addr(p.NATS)
	var a []string
	switch name {
	case Gateway:
		a = append(cfg("gateway.yaml"), "--listen", addr(p.NATS), "--monitor", addr(p.NATSMonitor),
			"--data-dir", filepath.Join(root, "gateway"), "--http-addr", addr(p.GatewayHTTP))
	case Cloud:
		a = append(cfg("cloud.yaml"), "--nats-url", natsURL, "--lake-dir", s.LakeDir(), "--http-addr", addr(p.CloudHTTP))
	case Edge:
		a = append(cfg("edge.yaml"), "--embedded-broker", "--broker-listen", addr(p.MQTT),
			"--mqtt-broker", "tcp://"+addr(p.MQTT), "--nats-url", natsURL,
			"--buffer-dir", filepath.Join(root, "edge", "buffer"), "--http-addr", addr(p.EdgeHTTP))
	case Sim:
		a = append(cfg("sim.yaml"), "--broker", "tcp://"+addr(p.MQTT), "--summary", s.SummaryPath(), "--http", addr(p.SimHTTP))
	}
	return append(a, s.opts.Args[name]...)
}

// Start launches one component and waits until it answers on its HTTP port
// (/readyz for the servers, /healthz for the simulator).
func (s *Stack) Start(ctx context.Context, name string) (*Proc, error) {
	if err := os.MkdirAll(s.LogDir(), 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(s.LogDir(), name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(s.opts.Bin, "updraft-"+name), s.args(name)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); lf.Close(); close(p.done) }()
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()

	probe := "/readyz"
	if name == Sim {
		probe = "/healthz"
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := Get(ctx, s.URL(name)+probe); err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited during start (%v); log: %s\n%s", name, p.err, logPath, Tail(logPath, 20))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s not ready after 60s; log: %s\n%s", name, logPath, Tail(logPath, 20))
		}
	}
}

// Proc returns a started component.
func (s *Stack) Proc(name string) *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[name]
}

// Kill sends SIGKILL and waits: a crash, as far as the component can tell.
func (s *Stack) Kill(name string) {
	if p := s.Proc(name); p != nil {
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Terminate asks a component to stop (SIGTERM), waits up to grace, then kills it.
func (s *Stack) Terminate(name string, grace time.Duration) error {
	p := s.Proc(name)
	if p == nil {
		return nil
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s; killed", name, grace)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return fmt.Errorf("%s exited with %v; log: %s", name, p.err, p.Log)
	}
	return nil
}

// Stop terminates everything in reverse start order.
func (s *Stack) Stop() error {
	var errs []error
	for _, n := range []string{Sim, Edge, Cloud, Gateway} {
		errs = append(errs, s.Terminate(n, 20*time.Second))
	}
	return errors.Join(errs...)
}

// Tail returns the last n lines of a log file.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := 0
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			lines++
			if lines > n {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}

// Get fetches url's body; a status other than 200 is an error that quotes
// the start of the body.
func Get(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return io.ReadAll(resp.Body)
}

// GetJSON fetches url and decodes its JSON into v.
func GetJSON(ctx context.Context, url string, v any) error {
	b, err := Get(ctx, url)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	return nil
}

// SumSeries adds up the samples of every labelled series of the counter or
// gauge name in a Prometheus text exposition, such as all
// updraft_edge_alerts_total series of an edge's /metrics; 0 when it has
// none.
func SumSeries(exposition []byte, name string) (float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(exposition))
	if err != nil {
		return 0, fmt.Errorf("metrics exposition: %w", err)
	}
	sum := 0.0
	if f, ok := fams[name]; ok {
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Untyped != nil:
				sum += m.GetUntyped().GetValue()
			default:
				return 0, fmt.Errorf("metric %s is a %s, not a counter or gauge", name, f.GetType())
			}
		}
	}
	return sum, nil
}

// Ports returns the stack's ports.
func (s *Stack) Ports() Ports { return s.opts.Ports }

// MQTTURL is the broker URL devices publish to.
func (s *Stack) MQTTURL() string { return "tcp://" + addr(s.opts.Ports.MQTT) }

// NATSURL is the regional gateway's client URL.
func (s *Stack) NATSURL() string { return "nats://" + addr(s.opts.Ports.NATS) }
