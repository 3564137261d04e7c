// Command registry is a distribution registry in a process of its own, for the demo
// (scripts/demo.sh) and the deploy benchmark: test/testenv's registry (plain HTTP,
// filesystem storage) served until it is told to stop.
//
//	registry -dir DIR [-listen 127.0.0.1:0] [-user U -password P] [-max-life 30m]
//
// It prints "ready ADDR PID" on stdout once it serves, and stops on SIGTERM or SIGINT,
// when the process that started it is gone, or after -max-life: it never outlives
// the script that needs it for long.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shipdeploy/ship/test/testenv"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on (a loopback address; port 0: a free one)")
	dir := fs.String("dir", "", "folder for the registry's storage (required)")
	user := fs.String("user", "", "demand HTTP basic auth for this user")
	password := fs.String("password", "", "the user's password (or REGISTRY_PASSWORD)")
	maxLife := fs.Duration("max-life", 30*time.Minute, "stop after this long whatever happens")
	verbose := fs.Bool("v", false, "write the registry's logs to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		return errors.New("usage: registry -dir DIR [-listen 127.0.0.1:0] [-user U -password P] [-max-life 30m]")
	}
	if err := loopback(*listen); err != nil {
		return err
	}
	if *password == "" {
		*password = os.Getenv("REGISTRY_PASSWORD")
	}
	var opts []testenv.RegistryOption
	if *user != "" {
		opts = append(opts, testenv.WithAuth(*user, *password))
	}
	if *verbose {
		testenv.RegistryLog(os.Stderr)
	} else {
		testenv.RegistryLog(io.Discard)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxLife)
	defer cancel()

	reg, err := testenv.StartRegistry(*listen, *dir, opts...)
	if err != nil {
		return err
	}
	defer reg.Stop()
	fmt.Printf("ready %s %d\n", reg.Addr, os.Getpid())

	parent := os.Getppid()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				fmt.Fprintf(os.Stderr, "registry: stopping after -max-life %s\n", *maxLife)
			}
			return nil
		case <-tick.C:
			// Reparented: whoever started it is gone (killed without a chance to
			// clean up); so is the reason to serve.
			if os.Getppid() != parent {
				fmt.Fprintln(os.Stderr, "registry: the process that started it is gone; stopping")
				return nil
			}
		}
	}
}

// loopback refuses addresses off this machine: the registry has no TLS and, without
// -user, no auth.
func loopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q: want a loopback IP address (127.0.0.1:0)", addr)
	}
	return nil
}
