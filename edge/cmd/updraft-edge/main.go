// Command updraft-edge is the Updraft edge agent: MQTT in, durable buffer,
// Arrow batches out to the regional JetStream stream.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"

	"github.com/updraft-io/updraft/edge/internal/agent"
	"github.com/updraft-io/updraft/schemas/config"
)

func main() {
	os.Exit(config.Main(os.Args[1:], config.Command[agent.Config]{
		Name:    "updraft-edge",
		Summary: "the Updraft edge agent: MQTT in, durable Badger buffer, Arrow batches out to regional JetStream",
		Default: agent.DefaultConfig,
		Flags: func(fs *flag.FlagSet, c *agent.Config) {
			fs.StringVar(&c.Region, "region", c.Region, "region of this edge")
			fs.StringVar(&c.Site, "site", c.Site, "site of this edge")
			fs.StringVar(&c.Edge, "edge", c.Edge, "id of this edge")
			fs.StringVar(&c.MQTT.Broker, "mqtt-broker", c.MQTT.Broker, "MQTT broker URL")
			fs.BoolVar(&c.Broker.Enabled, "embedded-broker", c.Broker.Enabled, "run an embedded MQTT broker")
			fs.StringVar(&c.Broker.Listen, "broker-listen", c.Broker.Listen, "embedded MQTT broker listen address")
			fs.StringVar(&c.NATS.URL, "nats-url", c.NATS.URL, "regional NATS URL")
			fs.StringVar(&c.Buffer.Dir, "buffer-dir", c.Buffer.Dir, "durable buffer directory")
			fs.StringVar(&c.HTTP.Addr, "http-addr", c.HTTP.Addr, "ops API address")
		},
		Run: func(ctx context.Context, c agent.Config, log *slog.Logger) error {
			a, err := agent.New(c, log, nil)
			if err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}, os.Stdout, os.Stderr))
}
