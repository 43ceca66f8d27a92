// Command updraft-sink subscribes to an MQTT topic filter, acknowledges
// what arrives and discards it: what a broker can deliver on a machine
// before any work is done with the messages, the ceiling the bench tool
// measures the edge agent's ingest against. Each line on stdin is answered
// with the count of messages received so far.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/updraft-io/updraft/tools/internal/sink"
)

func main() {
	fs := flag.NewFlagSet("updraft-sink", flag.ExitOnError)
	var c sink.Config
	qos := fs.Uint("qos", 1, "subscription QoS: 0, 1 or 2")
	fs.StringVar(&c.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	fs.StringVar(&c.Topic, "topic", "devices/+/telemetry", "topic filter")
	fs.StringVar(&c.ClientID, "client-id", "updraft-sink", "MQTT client id (clean session)")
	_ = fs.Parse(os.Args[1:])
	c.QoS = byte(min(*qos, 3))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := sink.Run(ctx, c, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "updraft-sink: %v\n", err)
		os.Exit(1)
	}
}
