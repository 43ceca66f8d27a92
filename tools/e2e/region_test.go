package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/updraft-io/updraft/schemas"
	"github.com/updraft-io/updraft/schemas/batch"
	"github.com/updraft-io/updraft/tools/internal/verify"
)

// rgPorts reserves n distinct free ports.
func rgPorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// rgProc is one binary started by the test.
type rgProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func rgStart(t *testing.T, dir, bin, name, config string) *rgProc {
	t.Helper()
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, bin), "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &rgProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			t.Logf("--- %s log (tail) ---\n%s", name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})
	return p
}

// kill sends SIGKILL and waits: a crash, as far as the cluster can tell.
func (p *rgProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func rgReady(t *testing.T, url string) {
	t.Helper()
	waitFor(t, 90*time.Second, url+" ready", func() (bool, string) {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
}

// TestRegionClusterLeaderKilled runs region "eu" as three updraft-gateway
// processes with TELEMETRY replicated three times and updraft-cloud writing
// the lake. A publisher acting as an edge (each batch re-published with the
// same Nats-Msg-Id until acknowledged) runs while the stream leader's
// process is killed: every reading must land in the lake exactly once.
func TestRegionClusterLeaderKilled(t *testing.T) {
	dir := t.TempDir()
	ports := rgPorts(t, 10)
	client, cluster, httpp, cloudHTTP := ports[0:3], ports[3:6], ports[6:9], ports[9]
	var routes, urls []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", cluster[i]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", client[i]))
	}
	gws := map[string]*rgProc{}
	for i := range 3 {
		name := fmt.Sprintf("gw-eu-%d", i+1)
		cfg := fmt.Sprintf(`region: eu
server_name: %s
data_dir: %s
nats: {listen: "127.0.0.1:%d", monitor: ""}
cluster: {listen: "127.0.0.1:%d", routes: [%s]}
streams:
  telemetry: {replicas: 3}
  events: {replicas: 3}
  deadletter: {replicas: 3}
http: {addr: "127.0.0.1:%d"}
`, name, filepath.Join(dir, name), client[i], cluster[i], strings.Join(routes, ", "), httpp[i])
		gws[name] = rgStart(t, dir, "updraft-gateway", name, cfg)
	}
	for i := range 3 {
		rgReady(t, fmt.Sprintf("http://127.0.0.1:%d", httpp[i]))
	}
	lakeDir := filepath.Join(dir, "lake")
	rgStart(t, dir, "updraft-cloud", "cloud", fmt.Sprintf(`region: eu
nats: {url: "%s", domain: eu}
lake: {dir: %s, roll_interval: 500ms}
http: {addr: "127.0.0.1:%d"}
`, strings.Join(urls, ","), lakeDir, cloudHTTP))
	rgReady(t, fmt.Sprintf("http://127.0.0.1:%d", cloudHTTP))

	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, "eu")
	if err != nil {
		t.Fatal(err)
	}
	const batches, per = 200, 50
	edge := schemas.EdgeID{Region: "eu", Site: "plant", Edge: "line-1"}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	published := map[verify.Key]float64{}
	var mu sync.Mutex
	acked := make(chan uint64, batches)
	pubErr := make(chan error, 1)
	go func() {
		for seq := uint64(1); seq <= batches; seq++ {
			var rs []schemas.Reading
			for i := range per {
				rs = append(rs, schemas.Reading{Region: "eu", Site: "plant", Edge: "line-1", Device: fmt.Sprintf("dev-%d", i%5),
					Metric: "temp", TS: base.Add(time.Duration(int(seq)*per+i) * time.Millisecond).UnixNano(),
					Value: float64(seq)*1000 + float64(i), Unit: "C"})
			}
			m, err := batch.Encode(batch.ID{Edge: edge, Epoch: 7, Seq: seq}, schemas.KindRaw, false, rs)
			if err != nil {
				pubErr <- err
				return
			}
			deadline := time.Now().Add(60 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					pubErr <- fmt.Errorf("batch %d not acknowledged in 60s: %w", seq, err)
					return
				}
				<-time.After(50 * time.Millisecond)
			}
			mu.Lock()
			for _, r := range rs {
				published[verify.Key{Edge: r.Edge, Device: r.Device, Metric: r.Metric, TS: r.TS}] = r.Value
			}
			mu.Unlock()
			acked <- seq
		}
		pubErr <- nil
	}()
	for range batches / 3 {
		<-acked
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, err := js.Stream(ctx, "TELEMETRY")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	leader := s.CachedInfo().Cluster.Leader
	p, ok := gws[leader]
	if !ok {
		t.Fatalf("TELEMETRY leader %q is not one of the gateways", leader)
	}
	p.kill()
	t.Logf("killed TELEMETRY leader %s after %d+ batches", leader, batches/3)
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}

	want := batches * per
	waitFor(t, 90*time.Second, "every reading committed", func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", cloudHTTP))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var st struct {
			Rows int `json:"rows_committed"`
		}
		json.NewDecoder(resp.Body).Decode(&st)
		return st.Rows >= want, fmt.Sprintf("%d rows committed, want %d", st.Rows, want)
	})
	rows, files, err := verify.ReadLake(lakeDir, "raw")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	rep := verify.Exact(rows, published)
	mu.Unlock()
	rep.Files = files
	if !rep.OK() {
		t.Fatalf("lake after losing the leader: %s %v", rep, rep.Examples)
	}
	t.Logf("lake: %s", rep)
}
