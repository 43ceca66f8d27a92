package config

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// Version is set at build time with -ldflags "-X github.com/updraft-io/updraft/schemas/config.Version=v1.2.3";
// otherwise it comes from the module build info.
var Version = ""

// VersionString reports the build version.
func VersionString() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Settings is what a binary's configuration struct provides.
type Settings interface {
	Validate() error
}

// Command describes one binary. Main runs it and returns the exit code, so a
// binary's main.go is one line: os.Exit(config.Main(os.Args[1:], cmd, os.Stdout, os.Stderr)).
type Command[T Settings] struct {
	Name    string
	Summary string
	Default func() T
	// Flags binds the most-changed settings to flags on fs, writing into c.
	Flags func(fs *flag.FlagSet, c *T)
	// Run runs the component until ctx ends.
	Run func(ctx context.Context, c T, log *slog.Logger) error
}

// Main parses args, loads --config, applies flags over it, validates, and runs.
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.
func Main[T Settings](args []string, cmd Command[T], stdout, stderr io.Writer) int {
	// Pass 1 finds --config; flags bound to a scratch value are ignored.
	scratch := cmd.Default()
	fs1, opts1 := cmd.flagSet(&scratch, io.Discard)
	if err := fs1.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmd.usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\nRun %s --help for usage.\n", cmd.Name, err, cmd.Name)
		return 2
	}
	if opts1.version {
		fmt.Fprintf(stdout, "%s %s\n", cmd.Name, VersionString())
		return 0
	}
	cfg := cmd.Default()
	if opts1.file != "" {
		if err := LoadFile(opts1.file, &cfg); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", cmd.Name, err)
			return 2
		}
	}
	// Pass 2 writes the explicitly given flags over the file's values.
	fs2, _ := cmd.flagSet(&cfg, io.Discard)
	_ = fs2.Parse(args)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd.Name, err)
		return 2
	}
	if opts1.check {
		fmt.Fprintf(stdout, "%s: configuration OK\n", cmd.Name)
		return 0
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: opts1.level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.Run(ctx, cfg, log.With("component", cmd.Name)); err != nil && !errors.Is(err, context.Canceled) {
		var cerr *Error
		if errors.As(err, &cerr) {
			fmt.Fprintf(stderr, "%s: %v\n", cmd.Name, err)
			return 2
		}
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

type commonOpts struct {
	file           string
	check, version bool
	level          slog.Level
}

func (cmd Command[T]) flagSet(c *T, out io.Writer) (*flag.FlagSet, *commonOpts) {
	o := &commonOpts{}
	fs := flag.NewFlagSet(cmd.Name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.file, "config", "", "YAML configuration file (settings below)")
	fs.BoolVar(&o.check, "check-config", false, "validate the configuration and exit")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	fs.TextVar(&o.level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if cmd.Flags != nil {
		cmd.Flags(fs, c)
	}
	return fs, o
}

func (cmd Command[T]) usage(w io.Writer) {
	fmt.Fprintf(w, "%s: %s\n\nUsage: %s [--config FILE] [flags]\n\nFlags:\n", cmd.Name, cmd.Summary, cmd.Name)
	def := cmd.Default()
	fs, _ := cmd.flagSet(&def, w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nSettings (YAML keys of --config, with defaults):\n")
	Describe(w, def)
}
