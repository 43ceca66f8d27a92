package sink

import (
	"bufio"
	"context"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/updraft-io/updraft/tools/internal/mqtttest"
)

// TestCounts: the sink answers each request with what it has received on
// its filter and nothing else, and ends when its input does.
func TestCounts(t *testing.T) {
	url := mqtttest.Start(t)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Config{Broker: url, Topic: "bench/+/telemetry", ClientID: "sink", QoS: 1}, inR, outW)
		outW.Close()
	}()
	answers := bufio.NewScanner(outR)
	count := func() int {
		t.Helper()
		if _, err := io.WriteString(inW, "\n"); err != nil {
			t.Fatal(err)
		}
		if !answers.Scan() {
			t.Fatalf("no answer: %v", answers.Err())
		}
		n, err := strconv.Atoi(strings.TrimSpace(answers.Text()))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("count before publishing = %d", n)
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("pub"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(250)
	const want = 500
	for i := range want {
		for _, topic := range []string{"bench/d" + strconv.Itoa(i%7) + "/telemetry", "devices/d1/telemetry"} {
			if tok := pub.Publish(topic, 1, false, []byte("x")); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	n := count()
	for n < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = count()
	}
	if n != want {
		t.Fatalf("count = %d, want %d (messages on another filter counted, or some lost)", n, want)
	}
	inW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return when its input ended")
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Broker: "tcp://127.0.0.1:1883", Topic: "a/#", ClientID: "c", QoS: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for key, c := range map[string]Config{
		"broker":    {Topic: "a", ClientID: "c"},
		"topic":     {Broker: "tcp://x:1", ClientID: "c"},
		"client-id": {Broker: "tcp://x:1", Topic: "a"},
		"qos":       {Broker: "tcp://x:1", Topic: "a", ClientID: "c", QoS: 3},
	} {
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("%s: err = %v, want one naming %s", key, err, key)
		}
		if err := Run(context.Background(), c, strings.NewReader(""), io.Discard); err == nil {
			t.Errorf("%s: Run accepted an invalid config", key)
		}
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
