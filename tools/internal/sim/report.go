package sim

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type stats struct {
	sent, acked, errors, inflight atomic.Int64
	ackedReadings                 atomic.Int64
	perDevice                     []atomic.Int64 // acked readings per device index
	rate                          atomic.Uint64  // float64 bits: acked messages/s over the last meter tick

	mu                sync.Mutex
	started, finished time.Time
}

func (st *stats) start(t time.Time) {
	st.mu.Lock()
	st.started = t
	st.mu.Unlock()
}

func (st *stats) finish(t time.Time) {
	st.mu.Lock()
	st.finished = t
	st.mu.Unlock()
}

func (st *stats) times() (time.Time, time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.started, st.finished
}

// Summary is what the broker acknowledged during a run, at the QoS used (at
// QoS 0: what was written to the connection without error). It is the JSON
// of --summary and the end-to-end check's expectation.
type Summary struct {
	// Readings counts the readings the agent decodes from the acknowledged
	// messages (Messages times the metrics per payload for json; births
	// and descriptions carry none, corrupted payloads none).
	Readings int64 `json:"readings"`
	Messages int64 `json:"messages"`
	// Devices counts the acknowledged readings of each device, by the
	// name the agent gives it (Sparkplug: <node>/<device>).
	Devices  map[string]int64 `json:"devices"`
	QoS      int              `json:"qos"`
	Seed     int64            `json:"seed"`
	Started  time.Time        `json:"started,omitzero"`
	Finished time.Time        `json:"finished,omitzero"`
	// Errors counts publishes that failed or were not acknowledged in time.
	Errors int64 `json:"errors"`
	// Sent counts publishes made; Sent = Messages + Errors once finished.
	Sent int64 `json:"sent"`
}

// Summary reports the counters now; after Run returns, the final ones.
func (s *Sim) Summary() Summary {
	sum := Summary{
		Messages: s.stats.acked.Load(),
		Devices:  make(map[string]int64, len(s.devices)),
		QoS:      s.cfg.QoS,
		Seed:     s.cfg.Seed,
		Errors:   s.stats.errors.Load(),
		Sent:     s.stats.sent.Load(),
	}
	sum.Readings = s.stats.ackedReadings.Load()
	for i := range s.stats.perDevice {
		if n := s.stats.perDevice[i].Load(); n > 0 {
			sum.Devices[s.deviceKey(i)] = n
		}
	}
	sum.Started, sum.Finished = s.stats.times()
	return sum
}

// Status is the body of GET /api/v1/status: the summary so far plus the
// live figures.
type Status struct {
	Summary
	Running  bool    `json:"running"`
	InFlight int64   `json:"in_flight"`
	Rate     float64 `json:"rate"` // acknowledged messages/s, last second
	Target   float64 `json:"target_rate"`
	Broker   string  `json:"broker"`
}

// Status reports the live counters.
func (s *Sim) Status() Status {
	return Status{
		Summary:  s.Summary(),
		Running:  s.running.Load(),
		InFlight: s.stats.inflight.Load(),
		Rate:     math.Float64frombits(s.stats.rate.Load()),
		Target:   s.cfg.Rate,
		Broker:   s.cfg.Broker,
	}
}

func (s *Sim) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.Status())
}

// writeSummary replaces path atomically, so a reader never sees half a file.
func writeSummary(path string, sum Summary) error {
	data, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return fmt.Errorf("encode summary: %w", err)
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write summary %s: %w", path, err)
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write summary %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write summary %s: %w", path, err)
	}
	return nil
}

func (s *Sim) registerMetrics() {
	counter := func(name, help string, v *atomic.Int64, mult float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "updraft_sim_" + name, Help: help},
			func() float64 { return float64(v.Load()) * mult })
	}
	s.reg.MustRegister(
		counter("messages_sent_total", "Publishes made.", &s.stats.sent, 1),
		counter("messages_acked_total", "Publishes the broker acknowledged (QoS 1) or that were written (QoS 0).", &s.stats.acked, 1),
		counter("readings_acked_total", "Readings in acknowledged publishes.", &s.stats.ackedReadings, 1),
		counter("publish_errors_total", "Publishes that failed or were not acknowledged in time.", &s.stats.errors, 1),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "updraft_sim_messages_in_flight", Help: "Publishes awaiting the broker's ack."},
			func() float64 { return float64(s.stats.inflight.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "updraft_sim_devices", Help: "Simulated devices."},
			func() float64 { return float64(len(s.devices)) }),
	)
}

// startMeter samples the ack rate every second for Status and reports
// progress; the returned func stops it and waits for it.
func (s *Sim) startMeter() func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	tick := time.Second
	if s.terminal && s.cfg.Progress > 0 {
		tick = min(s.cfg.Progress, 500*time.Millisecond)
	}
	go func() {
		defer close(done)
		t := time.NewTicker(tick)
		defer t.Stop()
		last, lastAt := s.stats.acked.Load(), time.Now()
		lastLog := lastAt
		for {
			select {
			case <-stop:
				if s.terminal && s.cfg.Progress > 0 {
					s.printProgress()
					fmt.Fprintln(s.progressOut)
				}
				return
			case now := <-t.C:
				acked := s.stats.acked.Load()
				rate := float64(acked-last) / now.Sub(lastAt).Seconds()
				s.stats.rate.Store(math.Float64bits(rate))
				last, lastAt = acked, now
				switch {
				case s.cfg.Progress <= 0:
				case s.terminal:
					s.printProgress()
				case now.Sub(lastLog) >= s.cfg.Progress:
					lastLog = now
					s.log.Info("progress", "sent", s.stats.sent.Load(), "acked", acked, "rate", math.Round(rate),
						"in_flight", s.stats.inflight.Load(), "errors", s.stats.errors.Load())
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}

// printProgress rewrites the terminal's current line.
func (s *Sim) printProgress() {
	fmt.Fprintf(s.progressOut, "\rsent %d  acked %d  rate %.0f/s  in flight %d  errors %d\x1b[K",
		s.stats.sent.Load(), s.stats.acked.Load(), math.Float64frombits(s.stats.rate.Load()),
		s.stats.inflight.Load(), s.stats.errors.Load())
}

// isTerminal reports whether f is a character device, which is how a
// terminal looks from here; pipes and files are not.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
