// Command updraft-sim simulates MQTT sensors publishing readings in the
// payload formats the edge agent decodes (docs/payloads.md), for
// the local stack, demos and end-to-end checks.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"

	"github.com/updraft-io/updraft/schemas/config"
	"github.com/updraft-io/updraft/tools/internal/sim"
)

func main() {
	os.Exit(config.Main(os.Args[1:], config.Command[sim.Config]{
		Name:    "updraft-sim",
		Summary: "simulated MQTT devices publishing readings (json, senml, sparkplug, tasmota, zigbee2mqtt, homie, numeric) at a set rate",
		Default: sim.DefaultConfig,
		Flags:   func(fs *flag.FlagSet, c *sim.Config) { c.Flags(fs) },
		Run: func(ctx context.Context, c sim.Config, log *slog.Logger) error {
			s, err := sim.New(c, log)
			if err != nil {
				return err
			}
			return s.Run(ctx)
		},
	}, os.Stdout, os.Stderr))
}
