package ops_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/schemas/ops"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs s until the returned stop is called; stop returns Run's error.
func serve(t *testing.T, s *ops.Server) (stop func() error) {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var stopped atomic.Bool
	stop = func() error {
		if stopped.Swap(true) {
			return nil
		}
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Run did not return after its context ended")
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return stop
}

func get(t *testing.T, client *http.Client, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := ops.NewRegistry()
	readings := prometheus.NewCounter(prometheus.CounterOpts{Name: "updraft_test_readings_total", Help: "readings seen"})
	reg.MustRegister(readings)
	readings.Add(7)
	var notReady atomic.Pointer[error]
	s := &ops.Server{
		Addr:     "127.0.0.1:0",
		Registry: reg,
		Ready: func() error {
			if p := notReady.Load(); p != nil {
				return *p
			}
			return nil
		},
		Handlers: map[string]http.Handler{
			"GET /api/v1/status": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"state":"forwarding"}`)
			}),
		},
	}
	serve(t, s)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	base := s.URL()
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("URL() = %q", base)
	}

	tests := []struct {
		name, method, path string
		prepare            func()
		code               int
		body               []string
	}{
		{"healthz", "GET", "/healthz", nil, 200, []string{"ok"}},
		{"readyz", "GET", "/readyz", nil, 200, []string{"ready"}},
		{"not ready", "GET", "/readyz", func() {
			err := errors.New("regional stream unreachable")
			notReady.Store(&err)
		}, 503, []string{"not ready: regional stream unreachable"}},
		{"healthy while not ready", "GET", "/healthz", nil, 200, []string{"ok"}},
		{"ready again", "GET", "/readyz", func() { notReady.Store(nil) }, 200, []string{"ready"}},
		{"metrics", "GET", "/metrics", nil, 200, []string{"updraft_test_readings_total 7", "go_goroutines", "process_"}},
		{"api handler", "GET", "/api/v1/status", nil, 200, []string{`"state":"forwarding"`}},
		{"wrong method", "POST", "/healthz", nil, 405, nil},
		{"unknown path", "GET", "/nope", nil, 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.prepare != nil {
				tt.prepare()
			}
			code, body := get(t, client, tt.method, base+tt.path)
			if code != tt.code {
				t.Errorf("%s %s: status %d, want %d (body %q)", tt.method, tt.path, code, tt.code, body)
			}
			for _, w := range tt.body {
				if !strings.Contains(body, w) {
					t.Errorf("%s %s: body lacks %q:\n%.500s", tt.method, tt.path, w, body)
				}
			}
		})
	}
}

func TestNoRegistryNoMetrics(t *testing.T) {
	s := &ops.Server{Addr: "127.0.0.1:0"}
	serve(t, s)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	if code, _ := get(t, client, "GET", s.URL()+"/metrics"); code != 404 {
		t.Errorf("/metrics without a registry: %d, want 404", code)
	}
	if code, _ := get(t, client, "GET", s.URL()+"/readyz"); code != 200 {
		t.Errorf("/readyz without a Ready func: %d, want 200", code)
	}
}

// Shutdown waits for a request in flight, then Run returns nil.
func TestGracefulShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	s := &ops.Server{Addr: "127.0.0.1:0", Handlers: map[string]http.Handler{
		"GET /slow": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			close(entered)
			<-release
			io.WriteString(w, "finished")
		}),
	}}
	stop := serve(t, s)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := client.Get(s.URL() + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b), err}
	}()
	<-entered
	stopErr := make(chan error, 1)
	go func() { stopErr <- stop() }()
	// The listener closes at once: new connections are refused while the
	// slow request is still being served.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := &http.Client{Transport: &http.Transport{}, Timeout: time.Second}
		resp, err := c.Get(s.URL() + "/healthz")
		if err != nil {
			c.CloseIdleConnections()
			break
		}
		// Read and close the body, or the connection stays in use and its
		// goroutines outlive the test.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.CloseIdleConnections()
		if time.Now().After(deadline) {
			t.Fatal("the server still accepts connections while shutting down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	r := <-res
	if r.err != nil || r.code != 200 || r.body != "finished" {
		t.Errorf("request in flight during shutdown: %d %q %v", r.code, r.body, r.err)
	}
	if err := <-stopErr; err != nil {
		t.Errorf("Run = %v, want nil after a graceful shutdown", err)
	}
}

func TestListenError(t *testing.T) {
	s := &ops.Server{Addr: "127.0.0.1:0"}
	serve(t, s)
	taken := &ops.Server{Addr: strings.TrimPrefix(s.URL(), "http://")}
	err := taken.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), taken.Addr) {
		t.Errorf("Run on a taken port: %v, want an error naming the address", err)
	}
	if err := (&ops.Server{Addr: "not-an-address"}).Listen(); err == nil {
		t.Error("Listen on a bad address succeeded")
	}
}

func TestRunListensItself(t *testing.T) {
	s := &ops.Server{Addr: "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// With its context already ended Run still binds, then shuts down.
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
}
