// Command updraft-edge is the Updraft edge agent: MQTT in, window aggregates
// and alert rules at the site, durable buffer, Arrow batches out to the
// regional JetStream stream. SIGHUP reloads the aggregate and rules sections.
package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/updraft-io/updraft/edge/internal/agent"
	"github.com/updraft-io/updraft/schemas/config"
)

func main() {
	args := os.Args[1:]
	os.Exit(config.Main(args, config.Command[agent.Config]{
		Name:    "updraft-edge",
		Summary: "the Updraft edge agent: MQTT in, aggregates and alerts at the site, durable Badger buffer, Arrow batches out to regional JetStream",
		Default: agent.DefaultConfig,
		Flags:   flags,
		Run: func(ctx context.Context, c agent.Config, log *slog.Logger) error {
			a, err := agent.New(c, log, nil)
			if err != nil {
				return err
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			return a.RunWithReload(ctx, hup, func() (agent.Config, error) { return load(args) })
		},
	}, os.Stdout, os.Stderr))
}

func flags(fs *flag.FlagSet, c *agent.Config) {
	fs.StringVar(&c.Region, "region", c.Region, "region of this edge")
	fs.StringVar(&c.Site, "site", c.Site, "site of this edge")
	fs.StringVar(&c.Edge, "edge", c.Edge, "id of this edge")
	fs.StringVar(&c.MQTT.Broker, "mqtt-broker", c.MQTT.Broker, "MQTT broker URL")
	fs.BoolVar(&c.Broker.Enabled, "embedded-broker", c.Broker.Enabled, "run an embedded MQTT broker")
	fs.StringVar(&c.Broker.Listen, "broker-listen", c.Broker.Listen, "embedded MQTT broker listen address")
	fs.StringVar(&c.NATS.URL, "nats-url", c.NATS.URL, "regional NATS URL")
	fs.StringVar(&c.Buffer.Dir, "buffer-dir", c.Buffer.Dir, "durable buffer directory")
	fs.StringVar(&c.HTTP.Addr, "http-addr", c.HTTP.Addr, "ops API address")
}

// load reads the configuration again as config.Main did at start: the
// defaults, then --config, then the flags given.
func load(args []string) (agent.Config, error) {
	var file string
	parse := func(c *agent.Config) error {
		fs := flag.NewFlagSet("updraft-edge", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.StringVar(&file, "config", "", "")
		fs.Bool("check-config", false, "")
		fs.Bool("version", false, "")
		fs.String("log-level", "", "")
		flags(fs, c)
		return fs.Parse(args)
	}
	scratch := agent.DefaultConfig()
	if err := parse(&scratch); err != nil {
		return scratch, err
	}
	c := agent.DefaultConfig()
	if file != "" {
		if err := config.LoadFile(file, &c); err != nil {
			return c, err
		}
	}
	if err := parse(&c); err != nil { // explicit flags win over the file
		return c, err
	}
	return c, c.Validate()
}
