// Command updraft-stack runs the Updraft local stack: `updraft-stack up` until
// Ctrl-C, or `updraft-stack demo` for a bounded time followed by a
// verification of the lake. `go tool task up` and `go tool task demo` call it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/updraft-io/updraft/tools/internal/stack"
)

func main() {
	fs := flag.NewFlagSet("updraft-stack", flag.ExitOnError)
	root := fs.String("root", ".updraft", "state directory")
	bin := fs.String("bin", "bin", "directory holding the updraft binaries")
	cfg := fs.String("config-dir", "deploy/local", "directory holding edge.yaml, gateway.yaml, cloud.yaml and sim.yaml")
	dur := fs.Duration("duration", 30*time.Second, "demo: how long the simulator publishes")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: updraft-stack [flags] up|demo\n\n")
		fs.PrintDefaults()
	}
	if len(os.Args) < 2 {
		fs.Usage()
		os.Exit(2)
	}
	cmd := os.Args[len(os.Args)-1]
	_ = fs.Parse(os.Args[1 : len(os.Args)-1])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := stack.Options{Root: *root, Bin: *bin, ConfigDir: *cfg, Ports: stack.LocalPorts()}
	var err error
	switch cmd {
	case "up":
		err = stack.Up(ctx, opts, os.Stdout)
	case "demo":
		_, err = stack.Demo(ctx, opts, *dur, os.Stdout)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "updraft-stack %s: %v\n", cmd, err)
		os.Exit(1)
	}
}
