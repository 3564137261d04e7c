package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/shipdeploy/ship/pkg/version"
)

const usage = `usage:
  shipd run [--config FILE]   serve: the API on a unix socket, the routes, the state
  shipd version               print the version
  shipd --version             the same

shipd run reloads without dropping a connection on SIGHUP (systemctl reload shipd):
it starts its successor with its listening sockets and exits once that one serves.
`

// run dispatches the command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shipd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("shipd"))
		return 0
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch rest[0] {
	case "run":
		return runCmd(rest[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version.String("shipd"))
		return 0
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "shipd: unknown command %q (want %s)\n\n%s", rest[0], strings.Join([]string{"run", "version"}, " or "), usage)
	return 2
}
