// Command updraft-gateway runs a region's gateway: the NATS JetStream server
// that edges publish to and the cloud consumes from.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"

	"github.com/updraft-io/updraft/gateway/internal/gateway"
	"github.com/updraft-io/updraft/schemas/config"
)

func main() {
	os.Exit(config.Main(os.Args[1:], config.Command[gateway.Config]{
		Name:    "updraft-gateway",
		Summary: "regional NATS JetStream server holding the TELEMETRY, EVENTS and DEADLETTER streams",
		Default: gateway.DefaultConfig,
		Flags:   func(fs *flag.FlagSet, c *gateway.Config) { c.Flags(fs) },
		Run: func(ctx context.Context, c gateway.Config, log *slog.Logger) error {
			g, err := gateway.New(c, log)
			if err != nil {
				return err
			}
			return g.Run(ctx)
		},
	}, os.Stdout, os.Stderr))
}
