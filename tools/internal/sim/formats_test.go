package sim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/updraft-io/updraft/tools/internal/mqtttest"
)

// subscribeAll records every message on the broker, in delivery order.
func subscribeAll(t *testing.T, broker string) *subscriber {
	t.Helper()
	s := &subscriber{}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("test-all").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := c.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, received{m.Topic(), append([]byte(nil), m.Payload()...)})
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return s
}

// spSeq reads a Sparkplug payload's seq (field 3), -1 if absent.
func spSeqOf(t *testing.T, b []byte) int {
	seq := -1
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad protobuf tag")
		}
		b = b[n:]
		if num == 3 && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			seq = int(v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			t.Fatalf("bad protobuf field %d", num)
		}
		b = b[m:]
	}
	return seq
}

// TestFormats publishes in every format and checks what reaches the broker
// has the format's shape and carries the readings the summary counts.
func TestFormats(t *testing.T) {
	for _, format := range []string{FormatJSON, FormatSenML, FormatSparkplug, FormatTasmota, FormatZigbee2MQTT, FormatHomie, FormatNumeric} {
		t.Run(format, func(t *testing.T) {
			broker := mqtttest.Start(t)
			sub := subscribeAll(t, broker)
			c := testConfig(broker)
			c.Format, c.Devices, c.Connections, c.Messages = format, 4, 2, 600
			_, sum := run(t, c)
			waitFor(t, 10*time.Second, "every message at the subscriber", func() bool { return sub.count() >= int(sum.Messages) })
			readings := 0
			seqs := map[string]int{}
			for _, m := range sub.all() {
				switch format {
				case FormatJSON, FormatTasmota, FormatZigbee2MQTT:
					var v map[string]any
					if err := json.Unmarshal(m.payload, &v); err != nil {
						t.Fatalf("%s %q: %v", m.topic, m.payload, err)
					}
					readings += 3
				case FormatSenML:
					var pack []map[string]any
					if err := json.Unmarshal(m.payload, &pack); err != nil || len(pack) != 3 || pack[0]["bt"] == nil {
						t.Fatalf("%s %q: %v", m.topic, m.payload, err)
					}
					readings += len(pack)
				case FormatHomie:
					if strings.HasSuffix(m.topic, "/$description") {
						continue
					}
					if _, err := strconv.ParseFloat(string(m.payload), 64); err != nil || !strings.HasPrefix(m.topic, "homie/5/dev-") {
						t.Fatalf("%s %q", m.topic, m.payload)
					}
					readings++
				case FormatNumeric:
					if _, err := strconv.ParseFloat(string(m.payload), 64); err != nil {
						t.Fatalf("%s %q", m.topic, m.payload)
					}
					readings++
				case FormatSparkplug:
					parts := strings.Split(m.topic, "/")
					node, typ := parts[3], parts[2]
					seq := spSeqOf(t, m.payload)
					last, seen := seqs[node]
					switch {
					case typ == "NBIRTH" && seq != 0:
						t.Fatalf("NBIRTH of %s has seq %d", node, seq)
					case !seen && typ != "NBIRTH":
						t.Fatalf("%s of %s before its NBIRTH", typ, node)
					case seen && typ != "NBIRTH" && seq != (last+1)%256:
						t.Fatalf("%s: seq %d after %d", node, seq, last)
					}
					seqs[node] = seq
					if typ == "DBIRTH" || typ == "DDATA" {
						readings += 3
					}
				}
			}
			if int64(readings) != sum.Readings || sum.Errors != 0 {
				t.Errorf("subscriber counted %d readings, summary %d (errors %d)", readings, sum.Readings, sum.Errors)
			}
		})
	}
}

func TestAnomalies(t *testing.T) {
	broker := mqtttest.Start(t)
	sub := subscribeAll(t, broker)
	c := testConfig(broker)
	c.Devices, c.Connections, c.Messages = 2, 1, 400
	c.Anomalies = Anomalies{Dropout: 0.1, Malformed: 0.1, OutOfOrder: 0.1, Late: 0.1, LateBy: time.Hour, Spike: 0.05, Stuck: 0.01}
	_, sum := run(t, c)
	waitFor(t, 10*time.Second, "every message", func() bool { return sub.count() >= int(sum.Messages) })
	bad, late, backwards := 0, 0, 0
	lastTS := map[string]float64{}
	for _, m := range sub.all() {
		var v map[string]float64
		if json.Unmarshal(m.payload, &v) != nil {
			bad++
			continue
		}
		if v["ts"] < lastTS[m.topic]-float64(time.Hour.Milliseconds())/2 {
			late++
		} else if v["ts"] < lastTS[m.topic] {
			backwards++
		}
		lastTS[m.topic] = max(lastTS[m.topic], v["ts"])
	}
	if sum.Messages >= 400 || bad == 0 || late == 0 || backwards == 0 {
		t.Errorf("messages %d (dropouts make it < 400), malformed %d, late %d, out of order %d: want all > 0", sum.Messages, bad, late, backwards)
	}
	if sum.Readings != 3*(sum.Messages-int64(bad)) {
		t.Errorf("summary counts %d readings, want 3 per good message (%d)", sum.Readings, 3*(sum.Messages-int64(bad)))
	}
}

// TestSparkplugRebirthOnRequest: a host's NCMD rebirth request makes the
// simulated node publish NBIRTH and its devices DBIRTH again.
func TestSparkplugRebirthOnRequest(t *testing.T) {
	broker := mqtttest.Start(t)
	sub := subscribeAll(t, broker)
	c := testConfig(broker)
	c.Format, c.Devices, c.Connections, c.Rate, c.Duration, c.Messages = FormatSparkplug, 2, 1, 400, 3*time.Second, 0
	births := func() (n, d int) {
		for _, m := range sub.all() {
			switch {
			case strings.Contains(m.topic, "/NBIRTH/"):
				n++
			case strings.Contains(m.topic, "/DBIRTH/"):
				d++
			}
		}
		return n, d
	}
	host := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("test-host").SetAutoReconnect(false))
	if tok := host.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer host.Disconnect(100)
	// The request goes out at QoS 0 once the node and both devices are born
	// (a device first born after the request is born only once), and again
	// every 100 ms until the node is born a second time: the node subscribes
	// to its commands as it connects, and a request that arrives before the
	// subscription is dropped.
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			n, d := births()
			if n >= 2 {
				return
			}
			if n > 0 && d >= 2 {
				host.Publish("spBv1.0/updraft/NCMD/node-1", 0, false, []byte{0x12, 0x02, 0x0a, 0x00})
				time.Sleep(100 * time.Millisecond)
				continue
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	_, sum := run(t, c)
	waitFor(t, 10*time.Second, "every message", func() bool { return sub.count() >= int(sum.Messages) })
	// Births are not counted in the summary, so the last DBIRTH of the
	// rebirth may still be on its way: wait for the births themselves.
	waitFor(t, 10*time.Second, "2 NBIRTH and 4 DBIRTH after a rebirth request", func() bool {
		n, d := births()
		return n >= 2 && d >= 4
	})
}

// TestManyDevicesTLS runs 100,000 devices over TLS with credentials.
func TestManyDevicesTLS(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{Auth: auth.AuthRules{
		{Username: "sim", Password: "secret", Allow: true}}}}); err != nil {
		t.Fatal(err)
	}
	addr := mqtttest.Serve(t, srv, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12})

	c := testConfig("ssl://" + addr)
	c.Devices, c.Connections, c.Messages = MaxDevices, 8, 2000
	c.Username, c.Password, c.TLS.CA = "sim", "secret", caFile
	_, sum := run(t, c)
	if sum.Messages != 2000 || sum.Errors != 0 || len(sum.Devices) != 2000 {
		t.Errorf("acked %d messages from %d devices, %d errors; want 2000 from 2000", sum.Messages, len(sum.Devices), sum.Errors)
	}
	c.Password = "wrong"
	c.ConnectTimeout = time.Second
	if s, err := New(c, nil); err != nil {
		t.Fatal(err)
	} else if err := s.Run(context.Background()); err == nil {
		t.Error("a wrong password connected")
	}
}
