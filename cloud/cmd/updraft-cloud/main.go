// Command updraft-cloud writes a region's telemetry stream to the Parquet
// lake exactly once and serves status and queries over HTTP.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"

	"github.com/updraft-io/updraft/cloud/internal/server"
	"github.com/updraft-io/updraft/schemas/config"
	"github.com/updraft-io/updraft/schemas/ops"
)

var cmd = config.Command[server.Config]{
	Name:    "updraft-cloud",
	Summary: "JetStream TELEMETRY -> Parquet lake (exactly once), plus the status and query API",
	Default: server.DefaultConfig,
	Flags: func(fs *flag.FlagSet, c *server.Config) {
		fs.StringVar(&c.NATS.URL, "nats-url", c.NATS.URL, "NATS server URL (nats.url)")
		fs.StringVar(&c.Region, "region", c.Region, "region whose TELEMETRY stream to consume (region)")
		fs.StringVar(&c.Lake.Dir, "lake-dir", c.Lake.Dir, "lake directory (lake.dir)")
		fs.DurationVar(&c.Lake.RollInterval, "roll-interval", c.Lake.RollInterval, "commit buffered readings at least this often (lake.roll_interval)")
		fs.StringVar(&c.HTTP.Addr, "http-addr", c.HTTP.Addr, "HTTP listen address (http.addr)")
	},
	Run: func(ctx context.Context, c server.Config, log *slog.Logger) error {
		s, err := server.New(c, log, ops.NewRegistry())
		if err != nil {
			return err
		}
		return s.Run(ctx)
	},
}

func main() { os.Exit(config.Main(os.Args[1:], cmd, os.Stdout, os.Stderr)) }
