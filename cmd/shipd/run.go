package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/shipdeploy/ship/pkg/agent"
)

// runCmd is `shipd run --config FILE`.
func runCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shipd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", agent.DefaultConfigFile, "the configuration file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "shipd run: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg, err := agent.LoadConfig(*config)
	if err != nil {
		fmt.Fprintln(stderr, "shipd:", err)
		return 2
	}
	level, _ := agent.ParseLevel(cfg.LogLevel) // checked by LoadConfig
	log := agent.NewLogger(stdout, level)
	// compose-go warns through logrus about variables a resolved release file leaves
	// unset; shipd reads such files without interpolation, so those are noise.
	logrus.SetOutput(io.Discard)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	handover := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				select {
				case handover <- struct{}{}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	if err := agent.Run(ctx, cfg, agent.Options{Log: log, Handover: handover, Args: os.Args[1:]}); err != nil {
		log.Error("shipd failed", "err", err)
		return 1
	}
	return 0
}
