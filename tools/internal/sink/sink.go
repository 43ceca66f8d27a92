// Package sink is an MQTT subscriber that acknowledges what it receives and
// discards it: the ceiling against which the edge agent's ingest is
// measured (docs/performance.md, "ingest"). It runs as a process of its own,
// as the agent does, so that the two share the machine the same way.
package sink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Config is what the sink subscribes to.
type Config struct {
	Broker   string // MQTT broker URL, tcp://host:port
	Topic    string // topic filter
	ClientID string
	QoS      byte
}

// Validate names the setting that is wrong.
func (c Config) Validate() error {
	switch {
	case c.Broker == "":
		return errors.New("broker: empty; want a URL such as tcp://127.0.0.1:1883")
	case c.Topic == "":
		return errors.New("topic: empty; want a topic filter such as devices/+/telemetry")
	case c.ClientID == "":
		return errors.New("client-id: empty; want an MQTT client id")
	case c.QoS > 2:
		return fmt.Errorf("qos: %d; want 0, 1 or 2", c.QoS)
	}
	return nil
}

// Run connects, subscribes with a clean session and counts the messages it
// receives, doing nothing else with them. Each line read from in is
// answered with a line on out holding the count so far; Run returns when in
// ends or ctx is done.
func Run(ctx context.Context, c Config, in io.Reader, out io.Writer) error {
	if err := c.Validate(); err != nil {
		return err
	}
	var n atomic.Int64
	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(c.Broker).SetClientID(c.ClientID).SetCleanSession(true))
	if t := cl.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return fmt.Errorf("connect to %s: %v", c.Broker, errOrTimeout(t.Error()))
	}
	defer cl.Disconnect(250)
	if t := cl.Subscribe(c.Topic, c.QoS, func(mqtt.Client, mqtt.Message) { n.Add(1) }); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe to %s: %v", c.Topic, errOrTimeout(t.Error()))
	}
	lines, done := make(chan error), make(chan struct{})
	defer close(done)
	go func() {
		sc := bufio.NewScanner(in)
		for {
			err := io.EOF
			if sc.Scan() {
				err = nil
			}
			select {
			case lines <- err:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	w := bufio.NewWriter(out)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-lines:
			if err != nil {
				return nil
			}
			if _, err := fmt.Fprintln(w, n.Load()); err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

func errOrTimeout(err error) error {
	if err == nil {
		return errors.New("timed out")
	}
	return err
}
