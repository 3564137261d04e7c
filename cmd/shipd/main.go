// Command shipd is ship's agent on a server: it swaps containers blue-green.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/shipdeploy/ship/pkg/version"
)

func main() {
	fs := flag.NewFlagSet("shipd", flag.ContinueOnError)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(version.String("shipd"))
		return
	}
	fmt.Fprintln(os.Stderr, "shipd: the agent arrives with its own issue; only --version works in this build")
	os.Exit(2)
}
