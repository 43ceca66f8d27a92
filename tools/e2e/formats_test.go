package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/updraft-io/updraft/tools/internal/stack"
	"github.com/updraft-io/updraft/tools/internal/verify"
)

// fmExternal finds an external program, or skips the test (fails with
// UPDRAFT_REQUIRE_EXTERNAL=1) when it is not installed.
func fmExternal(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		_, serr := os.Stat("/usr/sbin/" + name)
		if serr == nil {
			return "/usr/sbin/" + name
		}
		missingExternal(t, name, "mosquitto / mosquitto-clients", errors.Join(err, serr))
	}
	return path
}

// fmMosquitto starts Mosquitto on a random local port and returns its port.
func fmMosquitto(t *testing.T) int {
	t.Helper()
	bin := fmExternal(t, "mosquitto")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	logFile := filepath.Join(dir, "mosquitto.log")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listener %d 127.0.0.1\nallow_anonymous true\nlog_dest file %s\n", port, logFile), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	waitFor(t, 10*time.Second, "mosquitto to listen", func() (bool, string) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	return port
}

// fmDecode is the agent's decode section: one subscription per format.
const fmDecode = `decode:
  subscriptions:
    - {topic: devices/+/telemetry, template: "devices/{device}/telemetry", format: json, separator: _, arrays: true}
    - {topic: senml/+, template: "senml/{device}", format: senml}
    - {topic: tele/+/SENSOR, template: "tele/{device}/SENSOR", format: tasmota}
    - {topic: "zigbee2mqtt/#", template: "zigbee2mqtt/{device}", format: zigbee2mqtt, units: {temperature: Cel}}
    - {topic: "homie/5/#", template: "homie/5/{device}/{metric}", format: homie}
    - {topic: sensors/+/+, template: "sensors/{device}/{metric}", format: numeric}
    - {topic: "spBv1.0/#", format: sparkplug}
`

// fmStack starts gateway, cloud and an agent that reads every format from
// the external broker.
func fmStack(t *testing.T, broker string) *stack.Stack {
	t.Helper()
	cfgDir := t.TempDir()
	for _, f := range []string{"gateway.yaml", "cloud.yaml", "edge.yaml", "sim.yaml"} {
		b, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "local", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "edge.yaml" {
			s := string(b)
			i, j := strings.Index(s, "decode:\n"), strings.Index(s, "  max_payload_bytes:")
			if i < 0 || j < i {
				t.Fatal("deploy/local/edge.yaml has no decode section to replace")
			}
			b = []byte(s[:i] + fmDecode + s[j:])
		}
		if err := os.WriteFile(filepath.Join(cfgDir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ports, err := stack.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	s := stack.New(stack.Options{Root: t.TempDir(), Bin: binDir, ConfigDir: cfgDir, Ports: ports, Args: map[string][]string{
		stack.Cloud: {"--roll-interval", "500ms"},
		stack.Edge:  {"--embedded-broker=false", "--mqtt-broker", broker},
	}})
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			for _, n := range []string{stack.Gateway, stack.Cloud, stack.Edge} {
				if p := s.Proc(n); p != nil {
					t.Logf("--- %s log (tail) ---\n%s", n, stack.Tail(p.Log, 40))
				}
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range []string{stack.Gateway, stack.Cloud, stack.Edge} {
		if _, err := s.Start(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// fmReading is a reading the lake must hold; ts 0 means the agent's
// receive time, checked to lie within the test.
type fmReading struct {
	device, metric string
	value          float64
	unit           string
	ts             int64
}

// TestFormatsThroughMosquitto publishes real-looking payloads of every
// format with mosquitto_pub to an independent broker, and checks the exact
// readings the agent behind it puts in the lake.
func TestFormatsThroughMosquitto(t *testing.T) {
	port := fmMosquitto(t)
	pub := fmExternal(t, "mosquitto_pub")
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", port)

	s := fmStack(t, broker)
	publish := func(topic string, args ...string) {
		t.Helper()
		cmd := exec.Command(pub, append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(port), "-q", "1", "-t", topic}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub %s: %v\n%s", topic, err, out)
		}
	}
	rows := func() []verify.Row {
		rs, _, err := verify.ReadLake(s.LakeDir(), "raw")
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	// The agent subscribes once connected; a probe shows it is listening.
	waitFor(t, 60*time.Second, "a probe reading in the lake", func() (bool, string) {
		publish("sensors/fm-probe/up", "-m", "1")
		for _, r := range rows() {
			if r.Device == "fm-probe" {
				return true, ""
			}
		}
		return false, "no probe yet"
	})

	start := time.Now()
	t0 := start.Add(-time.Minute).Truncate(time.Second)
	ms := t0.UnixMilli()
	ns := t0.UnixNano()
	want := []fmReading{}
	add := func(rs ...fmReading) { want = append(want, rs...) }

	publish("devices/fm-json/telemetry", "-m", fmt.Sprintf(`{"ts":%d,"env":{"temperature":21.5},"pressure":"1013.2","door":true}`, ms))
	add(fmReading{"fm-json", "env_temperature", 21.5, "", ns}, fmReading{"fm-json", "pressure", 1013.2, "", ns}, fmReading{"fm-json", "door", 1, "", ns})
	publish("devices/fm-jarr/telemetry", "-m", fmt.Sprintf(`[{"ts":%d,"a":1},{"ts":%d,"a":2}]`, ms, ms+1000))
	add(fmReading{"fm-jarr", "a", 1, "", ns}, fmReading{"fm-jarr", "a", 2, "", ns + 1e9})

	// u applies to its own record only (RFC 8428), so the second has none.
	publish("senml/fm-senml", "-m", fmt.Sprintf(`[{"bn":"urn:dev:fm:","bt":%d,"n":"temp","u":"Cel","v":20.5},{"n":"temp","t":1.5,"v":20.75},{"n":"on","vb":false}]`, ms/1000))
	add(fmReading{"fm-senml", "urn:dev:fm:temp", 20.5, "Cel", ns}, fmReading{"fm-senml", "urn:dev:fm:temp", 20.75, "", ns + 1.5e9},
		fmReading{"fm-senml", "urn:dev:fm:on", 0, "", ns})

	publish("tele/fm-tasmota/SENSOR", "-m", fmt.Sprintf(`{"Time":"%s","BME280":{"Temperature":21.3,"Humidity":45},"ENERGY":{"TotalStartTime":"2024-01-01T00:00:00","Power":[12,0]},"TempUnit":"C"}`,
		t0.UTC().Format("2006-01-02T15:04:05")))
	add(fmReading{"fm-tasmota", "BME280_Temperature", 21.3, "Cel", ns}, fmReading{"fm-tasmota", "BME280_Humidity", 45, "%RH", ns},
		fmReading{"fm-tasmota", "ENERGY_Power_1", 12, "", ns}, fmReading{"fm-tasmota", "ENERGY_Power_2", 0, "", ns})

	publish("zigbee2mqtt/fm room/sensor", "-m", fmt.Sprintf(`{"temperature":19.5,"state":"ON","linkquality":87,"update":{"state":"idle"},"last_seen":%d}`, ms))
	add(fmReading{"fm_room/sensor", "temperature", 19.5, "Cel", ns}, fmReading{"fm_room/sensor", "state", 1, "", ns},
		fmReading{"fm_room/sensor", "linkquality", 87, "", ns})
	publish("zigbee2mqtt/bridge/state", "-m", `{"state":"online"}`)

	publish("homie/5/fm-homie/$description", "-m", `{"homie":"5.0","version":1,"nodes":{"sensor":{"properties":{"temperature":{"datatype":"float","unit":"Cel"}}}}}`)
	publish("homie/5/fm-homie/sensor/temperature", "-m", "22.25")
	publish("homie/5/fm-homie/$state", "-m", "ready")
	add(fmReading{"fm-homie", "sensor_temperature", 22.25, "Cel", 0})

	publish("sensors/fm-numeric/level", "-m", "3.5")
	add(fmReading{"fm-numeric", "level", 3.5, "", 0})

	// Sparkplug: the decoder's fixtures, a node's life in order.
	sp := time.Date(2024, 4, 5, 11, 0, 0, 0, time.UTC).UnixNano()
	for _, name := range []string{"nbirth", "dbirth", "ndata", "ddata"} {
		b, err := os.ReadFile(filepath.Join(repoRoot(), "edge", "internal", "decode", "testdata", "sparkplug", name+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		topic, payload, _ := strings.Cut(string(b), "\n")
		file := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(file, []byte(payload), 0o644); err != nil {
			t.Fatal(err)
		}
		publish(topic, "-f", file)
	}
	add(fmReading{"gw_1", "Inputs/Supply_Voltage", 24.1, "", sp}, fmReading{"gw_1", "Inputs/Supply_Voltage", 24.3, "", sp + 1e9},
		fmReading{"gw_1/pump_1", "Pressure", 2.5, "", sp}, fmReading{"gw_1/pump_1", "Offset", -7, "", sp},
		fmReading{"gw_1/pump_1", "Running", 1, "", sp}, fmReading{"gw_1/pump_1", "Setpoint", 3.5, "", sp},
		fmReading{"gw_1/pump_1", "Pressure", 2.75, "", sp + 2e9}, fmReading{"gw_1/pump_1", "Running", 0, "", sp + 2e9})

	// A text value is dead-lettered, not stored.
	publish("senml/fm-bad", "-m", `[{"n":"mode","vs":"warm"}]`)

	var got []verify.Row
	waitFor(t, 90*time.Second, fmt.Sprintf("%d readings in the lake", len(want)), func() (bool, string) {
		got = got[:0]
		for _, r := range rows() {
			if r.Device != "fm-probe" {
				got = append(got, r)
			}
		}
		return len(got) >= len(want), fmt.Sprintf("%d of %d", len(got), len(want))
	})
	end := time.Now()
	key := func(device, metric string, value float64) string {
		return fmt.Sprintf("%s|%s|%g", device, metric, value)
	}
	byKey := map[string]verify.Row{}
	for _, r := range got {
		k := key(r.Device, r.Metric, r.Value)
		if _, dup := byKey[k]; dup {
			t.Errorf("reading %s twice in the lake", k)
		}
		byKey[k] = r
		if r.Region != "local" || r.Site != "lab" || r.Edge != "edge-1" {
			t.Errorf("row %+v has the wrong identity", r)
		}
	}
	for _, w := range want {
		k := key(w.device, w.metric, w.value)
		r, ok := byKey[k]
		if !ok {
			t.Errorf("missing %s", k)
			continue
		}
		delete(byKey, k)
		unit := ""
		if r.Unit != nil {
			unit = *r.Unit
		}
		if unit != w.unit {
			t.Errorf("%s: unit %q, want %q", k, unit, w.unit)
		}
		if w.ts != 0 && r.TS != w.ts {
			t.Errorf("%s: ts %s, want %s", k, time.Unix(0, r.TS).UTC(), time.Unix(0, w.ts).UTC())
		}
		if w.ts == 0 && (r.TS < start.UnixNano() || r.TS > end.UnixNano()) {
			t.Errorf("%s: receive time %s outside the test", k, time.Unix(0, r.TS).UTC())
		}
		if math.IsNaN(r.Value) {
			t.Errorf("%s: NaN", k)
		}
	}
	var extra []string
	for k := range byKey {
		extra = append(extra, k)
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("unexpected readings in the lake: %v", extra)
	}
}

// TestSimulatorFormatsThroughMosquitto runs the simulator in every format
// against Mosquitto and checks that the agent stores exactly the readings
// the simulator's summary counts: the simulator speaks what the decoders
// read, Sparkplug births, aliases and seq wrap-around included.
func TestSimulatorFormatsThroughMosquitto(t *testing.T) {
	port := fmMosquitto(t)
	broker := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	s := fmStack(t, broker)
	total := int64(0)
	for _, format := range []string{"json", "senml", "sparkplug", "tasmota", "zigbee2mqtt", "homie", "numeric"} {
		summary := filepath.Join(t.TempDir(), format+".json")
		cmd := exec.Command(filepath.Join(binDir, "updraft-sim"), "--config", filepath.Join(repoRoot(), "deploy", "local", "sim.yaml"),
			"--broker", broker, "--format", format, "--topic", "", "--devices", "5", "--connections", "1", "--messages", "300",
			"--rate", "0", "--client-id", "fm-"+format, "--http", "", "--summary", summary)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("updraft-sim --format %s: %v\n%s", format, err, out)
		}
		b, err := os.ReadFile(summary)
		if err != nil {
			t.Fatal(err)
		}
		var sum struct {
			Readings, Errors int64
		}
		if err := json.Unmarshal(b, &sum); err != nil || sum.Errors != 0 || sum.Readings == 0 {
			t.Fatalf("%s summary %s: %v", format, b, err)
		}
		total += sum.Readings
		waitFor(t, 60*time.Second, fmt.Sprintf("%s: %d readings in the lake", format, total), func() (bool, string) {
			rs, _, err := verify.ReadLake(s.LakeDir(), "raw")
			if err != nil {
				return false, err.Error()
			}
			return int64(len(rs)) == total, fmt.Sprintf("%d rows", len(rs))
		})
	}
}
