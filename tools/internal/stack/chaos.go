package stack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/schemas/batch"
)

// ErrNoMosquitto: the mosquitto program is not installed.
var ErrNoMosquitto = errors.New("mosquitto is not installed (Debian package mosquitto)")

// Mosquitto is an external Mosquitto broker on loopback with persistence,
// for the store-and-forward proofs and the benchmarks: a real broker the
// agent connects to as a client, which can be restarted with its state.
type Mosquitto struct {
	Port int
	Dir  string // persistence and log
	path string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// MosquittoConfig is what StartMosquitto writes, before extra lines: no limit
// on messages queued for an offline persistent session (the default of 1000
// would drop acknowledged messages while the agent is down).
const MosquittoConfig = `allow_anonymous true
persistence true
autosave_interval 1
max_queued_messages 0
max_queued_bytes 0
set_tcp_nodelay true
`

// StartMosquitto starts mosquitto on a free loopback port with its state in
// dir; extra is appended to the configuration (e.g. "max_inflight_messages 100").
func StartMosquitto(dir, extra string) (*Mosquitto, error) {
	path, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoMosquitto, errors.Join(err, serr))
		}
		path = "/usr/sbin/mosquitto"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	m := &Mosquitto{Port: port, Dir: dir, path: path, conf: filepath.Join(dir, "mosquitto.conf")}
	conf := fmt.Sprintf("listener %d 127.0.0.1\npersistence_location %s/\nlog_dest file %s\n%s%s\n",
		port, dir, filepath.Join(dir, "mosquitto.log"), MosquittoConfig, extra)
	if u, err := user.Current(); err == nil {
		// Started as root, mosquitto switches to the user "mosquitto", which
		// cannot write dir: it would run without persistence or a log.
		conf += "user " + u.Username + "\n"
	}
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return m, m.start()
}

func (m *Mosquitto) start() error {
	m.cmd = exec.Command(m.path, "-c", m.conf)
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	m.done = make(chan struct{})
	cmd, done := m.cmd, m.done
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Addr(), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("mosquitto exited during start; log:\n%s", Tail(filepath.Join(m.Dir, "mosquitto.log"), 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = m.Stop()
			return fmt.Errorf("mosquitto not listening on %s after 10s", m.Addr())
		}
	}
}

// Addr is host:port; URL the MQTT URL.
func (m *Mosquitto) Addr() string { return addr(m.Port) }
func (m *Mosquitto) URL() string  { return "tcp://" + m.Addr() }

// Pid is the running broker's process id.
func (m *Mosquitto) Pid() int { return m.cmd.Process.Pid }

// Stop asks mosquitto to exit (SIGTERM: it saves its persistence file) and
// waits. Stopping a stopped broker is a no-op.
func (m *Mosquitto) Stop() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
		return errors.New("mosquitto did not stop within 10s; killed")
	}
}

// Restart stops the broker and starts it again on the same port with the
// same persistence: queued messages of persistent sessions survive.
func (m *Mosquitto) Restart() error {
	if err := m.Stop(); err != nil {
		return err
	}
	return m.start()
}

// StreamContents is what a stream holds, decoded.
type StreamContents struct {
	Batches, ReplayBatches int
	Bytes                  int64
	Decoded                []batch.Batch
}

// ReadStream decodes every batch in a stream, in stream order. It fails on a
// message that is not a valid batch.
func ReadStream(ctx context.Context, natsURL, stream string) (StreamContents, error) {
	var out StreamContents
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return out, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return out, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return out, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return out, err
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return out, err
	}
	for n := uint64(0); n < info.State.Msgs; {
		batchMsgs, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return out, err
		}
		got := 0
		for m := range batchMsgs.Messages() {
			got++
			b, err := batch.Decode(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				return out, fmt.Errorf("stream %s message %d: %w", stream, n+uint64(got), err)
			}
			out.Batches++
			out.Bytes += int64(len(m.Data()))
			if b.Replay {
				out.ReplayBatches++
			}
			out.Decoded = append(out.Decoded, *b)
		}
		if err := batchMsgs.Error(); err != nil {
			return out, err
		}
		if got == 0 {
			return out, fmt.Errorf("stream %s: read %d of %d messages, then nothing", stream, n, info.State.Msgs)
		}
		n += uint64(got)
	}
	return out, nil
}

// ProcRSS is a process's resident set size in bytes (Linux /proc).
func ProcRSS(pid int) (int64, error) {
	return procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:", 1024)
}

// ProcWriteBytes is the bytes a process caused to be written to storage
// (Linux /proc/<pid>/io write_bytes): what wears an SD card.
func ProcWriteBytes(pid int) (int64, error) {
	return procField(fmt.Sprintf("/proc/%d/io", pid), "write_bytes:", 1)
}

// ProcCPU is the CPU time a process has used, user and system, all its
// threads (Linux /proc/<pid>/stat utime and stime, in USER_HZ ticks of 10 ms).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] { // fields 14 and 15
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// MachineCPU is the CPU time all of this machine's CPUs have spent so far,
// from the first line of /proc/stat: busy is user, nice, system, irq and
// softirq time (every process and kernel thread, the file system's journal
// and writeback included); steal is time a virtual machine's CPUs were
// ready to run but the hypervisor ran something else.
func MachineCPU() (busy, steal time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var t [8]int64 // user nice system idle iowait irq softirq steal
	for i := range t {
		if t[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	tick := 10 * time.Millisecond
	return time.Duration(t[0]+t[1]+t[2]+t[5]+t[6]) * tick, time.Duration(t[7]) * tick, nil
}

func procField(path, field string, unit int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			v, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v * unit, err
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}
